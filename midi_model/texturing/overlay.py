"""The picture a user checks the camera with: projected silhouettes over the photo, mask outlines on top."""
from __future__ import annotations

import colorsys

import numpy as np

from .bake import render_scene
from .camera import Camera


def object_colours(n: int) -> np.ndarray:
    """n distinct bright colours (uint8)."""
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.61803) % 1.0, 0.85, 1.0)]
                     for i in range(n)], np.uint8).reshape(n, 3)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation, binary_erosion

    return mask & ~binary_erosion(mask, iterations=width, border_value=0) | \
        (binary_dilation(mask, iterations=max(width - 1, 0)) & ~mask if width > 1 else np.zeros_like(mask))


def camera_overlay(image: np.ndarray, camera: Camera, vertices: list, faces: list, masks: np.ndarray,
                   ious=None) -> np.ndarray:
    """uint8 (H, W, 3): photo dimmed, each object's visible projection tinted in its colour, its mask
    outlined in the same colour. Where tint and outline agree, the camera fits."""
    img = np.asarray(image)[..., :3].astype(np.float32)
    if img.max() <= 1.0 and np.asarray(image).dtype != np.uint8:
        img = img * 255
    H, W = img.shape[:2]
    cam = camera if (camera.width, camera.height) == (W, H) else camera.scaled(W, H)
    obj = render_scene(cam, vertices, faces).obj.numpy()
    colours = object_colours(len(vertices)).astype(np.float32)
    out = img * 0.55
    for i in range(len(vertices)):
        vis = obj == i
        out[vis] = out[vis] * 0.5 + colours[i] * 0.5
    width = max(1, round(max(H, W) / 256))
    for i, m in enumerate(np.asarray(masks).astype(bool)):
        out[_outline(m, width)] = colours[i]
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if ious is not None:
        from PIL import Image, ImageDraw

        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        for i, m in enumerate(np.asarray(masks).astype(bool)):
            ys, xs = np.nonzero(m)
            if len(xs):
                draw.text((float(xs.mean()), float(ys.mean())), f"{i + 1}: IoU {ious[i]:.2f}",
                          fill=tuple(int(c) for c in colours[i]), stroke_width=1, stroke_fill=(0, 0, 0))
        out = np.asarray(pil)
    return out
