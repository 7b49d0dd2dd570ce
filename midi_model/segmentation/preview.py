"""Preview image: each instance tinted in its own colour, outlined and numbered 1..N."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

# distinct, readable on photos; more instances get evenly spaced hues
_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]


def instance_color(i: int) -> tuple[int, int, int]:
    if i < len(_PALETTE):
        return _PALETTE[i]
    r, g, b = colorsys.hsv_to_rgb(((i * 0.618034) % 1.0), 0.8, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _label_anchor(mask: np.ndarray) -> tuple[int, int]:
    """The pixel deepest inside the mask, so the number sits on the object."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def render_preview(image_rgb, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H,W,3) uint8 image (None: grey) + (N,H,W) masks -> (H,W,3) uint8 preview."""
    masks = np.asarray(masks, bool)
    h, w = masks.shape[1:] if masks.ndim == 3 and masks.shape[0] else np.asarray(image_rgb).shape[:2]
    base = np.full((h, w, 3), 128, np.uint8) if image_rgb is None else np.asarray(image_rgb, np.uint8)
    out = base.astype(np.float32)
    for i, m in enumerate(masks):
        color = np.asarray(instance_color(i), np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * color
        edge = m & ~ndimage.binary_erosion(m, iterations=max(1, min(h, w) // 256))
        out[edge] = color
    pil = Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    try:  # Pillow >= 10.1 scales its default font; readable on 1024 px images too
        font = ImageFont.load_default(size=max(10, min(h, w) // 24))
    except TypeError:
        font = ImageFont.load_default()
    for i, m in enumerate(masks):
        if not m.any():
            continue
        x, y = _label_anchor(m)
        text = str(i + 1)
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l, b - t
        x0 = int(np.clip(x - tw // 2, 0, max(0, w - tw - 4)))
        y0 = int(np.clip(y - th // 2, 0, max(0, h - th - 4)))
        draw.rectangle([x0, y0, x0 + tw + 3, y0 + th + 3], fill=(0, 0, 0))
        draw.text((x0 + 2 - l, y0 + 2 - t), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil, np.uint8).copy()
