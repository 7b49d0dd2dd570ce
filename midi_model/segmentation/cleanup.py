"""Mask clean-up: specks, holes, largest-outline refinement, duplicates, overlaps.

Connectivity: foreground is 8-connected and background 4-connected, the pairing under
which a diagonal chain of pixels is a closed outline (as contour tracing treats it).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def area_to_pixels(value, image_area: int) -> int:
    """Area threshold -> pixels. 0/None: off; 0 < value < 1: fraction of the image area;
    value >= 1: pixels."""
    if value is None or value <= 0:
        return 0
    if value < 1:
        return int(math.ceil(float(value) * image_area))
    return int(value)


def remove_specks(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """Drop 8-connected pieces smaller than ``min_area_px`` pixels."""
    mask = np.asarray(mask, bool)
    if min_area_px <= 0 or not mask.any():
        return mask.copy()
    lab, n = ndimage.label(mask, structure=_EIGHT)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_area_px
    keep[0] = False
    return keep[lab]


def fill_holes(mask: np.ndarray, max_hole_px: int | None = None) -> np.ndarray:
    """Fill enclosed background pieces of at most ``max_hole_px`` pixels (None: all of them)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask.copy()
    if max_hole_px is None:
        return ndimage.binary_fill_holes(mask, structure=_FOUR)
    if max_hole_px <= 0:
        return mask.copy()
    lab, n = ndimage.label(~mask, structure=_FOUR)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    # background pieces that touch the border are not holes
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    fill = sizes <= max_hole_px
    fill[0] = False
    fill[border] = False
    return mask | fill[lab]


def largest_outline_filled(mask: np.ndarray) -> np.ndarray:
    """Official 'polygon refinement': keep the largest outer outline and fill it.

    Filling holes first and then taking the largest 8-connected piece gives the filled
    region of the largest external contour (pieces inside a hole belong to it, as they
    do inside a filled contour)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask.copy()
    filled = ndimage.binary_fill_holes(mask, structure=_FOUR)
    lab, n = ndimage.label(filled, structure=_EIGHT)
    if n <= 1:
        return filled
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def clean_mask(mask: np.ndarray, *, min_area_px: int = 0, fill: bool = False, max_hole_px: int | None = None,
               refine: bool = False) -> np.ndarray:
    """One mask: optional outline refinement, then hole filling, then speck removal."""
    out = np.asarray(mask, bool)
    if refine:
        out = largest_outline_filled(out)
    if fill:
        out = fill_holes(out, max_hole_px)
    if min_area_px > 0:
        out = remove_specks(out, min_area_px)
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def dedupe_masks(masks: np.ndarray, iou_threshold: float | None) -> list[int]:
    """Indices to keep: a mask whose IoU with an earlier kept mask exceeds the threshold is a
    duplicate (the detector found the same object twice) and is dropped; order is kept."""
    keep: list[int] = []
    for i, m in enumerate(masks):
        if iou_threshold is not None and iou_threshold > 0 and any(
                mask_iou(m, masks[j]) > iou_threshold for j in keep):
            continue
        keep.append(i)
    return keep
