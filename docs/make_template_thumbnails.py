"""Draw the template browser's card pictures, ``workflows/<template>.jpg``, from the pack's example inputs.

ComfyUI (frontend 1.45) shows a custom-node template as its file name plus ``<name>.jpg``; the name is
both title and description, so the picture says what goes in and what comes out.

    python docs/make_template_thumbnails.py            # rewrites workflows/*.jpg
"""
from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "example_inputs")
SIZE = 384
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def font(size, bold=False):
    try:
        return ImageFont.truetype(BOLD if bold else FONT, size)
    except OSError:
        return ImageFont.load_default()


def example(name):
    rgb = Image.open(os.path.join(EX, f"{name}_rgb.jpg")).convert("RGB")
    seg = Image.open(os.path.join(EX, f"{name}_seg.png")).convert("RGB")
    return rgb, seg


def overlay(rgb, seg, alpha=0.55):
    a, s = np.asarray(rgb, np.float32), np.asarray(seg, np.float32)
    on = s.sum(-1, keepdims=True) > 0
    return Image.fromarray(np.where(on, a * (1 - alpha) + s * alpha, a * 0.55).astype(np.uint8))


def caption(img, lines):
    """A dark band at the bottom with one or two lines of text."""
    d = ImageDraw.Draw(img)
    h = 26 * len(lines) + 12
    d.rectangle([0, SIZE - h, SIZE, SIZE], fill=(20, 20, 24))
    for i, (text, bold) in enumerate(lines):
        d.text((12, SIZE - h + 7 + 26 * i), text, fill=(235, 235, 235) if bold else (190, 190, 190),
               font=font(18 if bold else 15, bold))
    return img


def pair(left, right):
    """Two square pictures side by side over the upper part of the card."""
    img = Image.new("RGB", (SIZE, SIZE), (32, 32, 36))
    w = SIZE // 2 - 6
    img.paste(left.resize((w, w), Image.LANCZOS), (4, 30))
    img.paste(right.resize((w, w), Image.NEAREST), (SIZE // 2 + 2, 30))
    return img


def seg_map_card():
    rgb, seg = example("bedroom")
    img = pair(rgb, seg)
    return caption(img, [("picture + seg map -> 3D scene", True), ("example included, no SAM needed", False)])


def image_prompt_card():
    rgb, seg = example("bedroom")
    img = pair(rgb, overlay(rgb, seg))
    ImageDraw.Draw(img).text((10, 6), "prompt: bed. potted plant. lamp", fill=(235, 235, 235), font=font(15))
    return caption(img, [("picture + text prompt -> 3D scene", True), ("Grounding DINO + SAM find the objects", False)])


def sdxl_card():
    img = Image.new("RGB", (SIZE, SIZE), (32, 32, 36))
    d = ImageDraw.Draw(img)
    steps = ["SDXL: text -> picture", "Segment Scene (text)", "MIDI: one mesh per object", "scene GLB in Preview 3D"]
    for i, s in enumerate(steps):
        y = 24 + i * 72
        d.rounded_rectangle([40, y, SIZE - 40, y + 46], radius=8, fill=(58, 62, 74), outline=(120, 130, 150))
        d.text((56, y + 13), s, fill=(235, 235, 235), font=font(16, True))
        if i < len(steps) - 1:
            d.polygon([(SIZE // 2 - 8, y + 52), (SIZE // 2 + 8, y + 52), (SIZE // 2, y + 66)], fill=(150, 160, 180))
    return caption(img, [("text prompt -> SDXL -> 3D scene", True), ("for stylised scenes", False)])


def reroll_card():
    rgb, seg = example("bedroom")
    s = np.asarray(seg).copy()
    keep = np.asarray(seg.convert("L")) != 76           # object 2 (grey 76) is the one re-rolled
    s[keep & (s.sum(-1) > 0)] = (90, 90, 90)
    img = pair(rgb, Image.fromarray(s))
    return caption(img, [("re-roll one object, keep the rest", True), ("same scene, object 2 sampled again", False)])


def textured_card():
    rgb, seg = example("bedroom")
    img = pair(rgb, overlay(rgb, seg, 0.35))
    return caption(img, [("picture + seg map -> textured 3D scene", True),
                         ("camera from the masks, colours from the picture", False)])


CARDS = {
    "3D scene from a seg map": seg_map_card,
    "3D scene from an image and a text prompt": image_prompt_card,
    "3D scene from an SDXL prompt": sdxl_card,
    "Reroll objects in a 3D scene": reroll_card,
    "Textured 3D scene from a seg map": textured_card,
}


def main(out_dir=os.path.join(ROOT, "workflows")):
    for name, make in CARDS.items():
        path = os.path.join(out_dir, name + ".jpg")
        make().save(path, quality=85, optimize=True)
        print(path, os.path.getsize(path))


if __name__ == "__main__":
    main(*sys.argv[1:])
