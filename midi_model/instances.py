"""Instance masks from a segmentation label map, in the official MIDI order.

The official scripts read a seg PNG with ``convert("L")`` and take every non-zero
grey value as one instance, in ascending order. That order fixes each instance's
batch index (and so its slice of the initial noise), so it must not change.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def to_label_map(seg) -> np.ndarray:
    """Any seg map (PIL image, HxW or HxWx3/4 array) -> HxW uint8 'L' values.

    Colour maps become luma values exactly as PIL's ``convert("L")`` computes them,
    because that is what the official pipeline sees.
    """
    if isinstance(seg, Image.Image):
        return np.asarray(seg.convert("L"), dtype=np.uint8)
    arr = np.asarray(seg)
    if arr.ndim == 2:
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating):
                arr = np.clip(np.round(arr * 255.0), 0, 255)
            arr = arr.astype(np.uint8)
        return arr
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        if arr.shape[2] == 1:
            return to_label_map(arr[..., 0])
        if arr.dtype != np.uint8:
            arr = np.clip(np.round(np.asarray(arr, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., :3])).convert("L"), dtype=np.uint8)
    raise ValueError(f"seg map: expected an HxW or HxWx3 image, got an array of shape {arr.shape}")


def split_label_map(seg, max_instances: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label map -> (ids (N,) int64 ascending, masks (N,H,W) bool).

    ``max_instances`` keeps the first N in official order (as the golden run does).
    """
    label = to_label_map(seg)
    ids = np.unique(label)
    ids = ids[ids != 0].astype(np.int64)
    if max_instances is not None and max_instances > 0:
        ids = ids[:max_instances]
    masks = np.stack([label == i for i in ids]) if len(ids) else np.zeros((0,) + label.shape, bool)
    return ids, masks


def masks_to_label_map(masks: np.ndarray) -> np.ndarray:
    """(N,H,W) masks -> HxW uint8 label map with values 1..N (later masks win)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected (N,H,W), got shape {masks.shape}")
    if masks.shape[0] > 255:
        raise ValueError(f"masks: at most 255 instances fit a uint8 label map, got {masks.shape[0]}")
    label = np.zeros(masks.shape[1:], np.uint8)
    for i, m in enumerate(masks):
        label[np.asarray(m) > 0.5] = i + 1
    return label
