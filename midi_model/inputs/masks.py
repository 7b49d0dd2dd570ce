"""Instance masks: files (white, any colour, or alpha = object), batches, sizes, empties, overlaps.

Masks are numbered from 1 in every message, as the user counts them.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from ..errors import MIDIInputError
from .arrays import check_unit_range, to_numpy
from .images import open_image
from .sizes import check_same_size


def mask_from_image(img: Image.Image, what: str) -> np.ndarray:
    """PIL mask -> HxW bool. The object is: the opaque part when the alpha varies; otherwise the
    brighter value of a two-valued mask (0/1, 0/255, red on black); otherwise any channel > 127."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img.convert("I") if img.mode != "I" else img, dtype=np.int64)
        v = arr / (257.0 if arr.max(initial=0) > 255 else 1.0)
    elif img.mode == "F":
        v = np.asarray(img, dtype=np.float64) * 255.0
    else:
        rgba = np.asarray(img.convert("RGBA"))
        alpha = rgba[..., 3]
        if alpha.min() != alpha.max():
            return alpha > 127
        v = rgba[..., :3].max(axis=2)
    levels = np.unique(v)
    if len(levels) == 2:
        return v == levels[1]
    fg = v > 127
    if not fg.any() and len(levels) > 2:
        raise MIDIInputError(f"{what}: no pixel is brighter than half (the brightest is {float(levels[-1]):g} "
                             f"of 255): paint the object white (or any bright colour) on black")
    return fg


def read_mask(path, what: str = "--masks") -> np.ndarray:
    """A mask file -> HxW bool, upright."""
    return mask_from_image(open_image(path, what), f"{what} {os.fspath(path)}")


def as_mask_stack(masks, what: str = "masks") -> np.ndarray:
    """(H,W), (N,H,W), (N,1,H,W) or (N,H,W,1) masks (numpy, torch, list) -> (N,H,W) bool.

    Floats (ComfyUI MASK, 0..1) are foreground above 0.5; integers and bools above 0."""
    if masks is None:
        raise MIDIInputError(f"{what}: no masks given")
    if isinstance(masks, (list, tuple)):
        if len(masks) == 0:
            return np.zeros((0, 0, 0), bool)
        parts = [to_numpy(m) for m in masks]
        if len({p.shape for p in parts}) > 1:
            raise MIDIInputError(f"{what}: the masks have different sizes {sorted({p.shape for p in parts})}: "
                                 f"give every mask at the image size")
        masks = np.stack(parts)
    arr = to_numpy(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise MIDIInputError(f"{what}: expected a (N,H,W) mask batch, got shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating):
        check_unit_range(arr, what, "MASK")
        return arr > 0.5
    return arr > 0


def resolve_overlaps(masks: np.ndarray, precedence: str = "later") -> np.ndarray:
    """Make masks disjoint. ``later``: a later mask wins shared pixels (as when the official
    code paints detection i+1 over detection i in its label map); ``earlier``: the first wins."""
    masks = np.asarray(masks, bool)
    out = masks.copy()
    if len(masks) < 2:
        return out
    if precedence not in ("later", "earlier"):
        raise MIDIInputError(f"overlap must be 'later' or 'earlier', got {precedence!r}")
    order = range(len(masks) - 1, -1, -1) if precedence == "later" else range(len(masks))
    claimed = np.zeros(masks.shape[1:], bool)
    for i in order:
        out[i] &= ~claimed
        claimed |= masks[i]
    return out


def _listed(idx) -> str:
    return ", ".join(str(i + 1) for i in idx)


def prepare_masks(masks, image_hw=None, what: str = "masks") -> np.ndarray:
    """The contract every route shares: (N,H,W) bool at the image size, at least one, none empty,
    disjoint (a later mask wins shared pixels, with a warning, as in a painted label map)."""
    stack = as_mask_stack(masks, what)
    if len(stack) == 0:
        raise MIDIInputError(f"{what}: no instances given; segment the image first (at least one object)")
    if image_hw is not None:
        check_same_size(image_hw, stack.shape[1:], f"the {what}")
    empty = [i for i in range(len(stack)) if not stack[i].any()]
    if empty:
        raise MIDIInputError(f"{what}: mask {_listed(empty)} of {len(stack)} is empty (no pixel above half): "
                             f"remove it or fix the segmentation")
    if len(stack) > 1 and (stack.sum(0) > 1).any():
        out = resolve_overlaps(stack, "later")
        gone = [i for i in range(len(out)) if not out[i].any()]
        if gone:
            raise MIDIInputError(f"{what}: mask {_listed(gone)} of {len(stack)} lies entirely under later masks: "
                                 f"remove it, or reorder the masks (a later mask wins shared pixels)")
        shared = [i for i in range(len(out)) if (out[i] != stack[i]).any()]
        warnings.warn(f"{what}: mask {_listed(shared)} overlap later masks; the shared pixels go to the later "
                      f"mask, as in a painted seg map", stacklevel=2)
        stack = out
    return stack


def masks_from_batch(masks, image_hw=None, empty: str = "drop", what: str = "masks") -> tuple[np.ndarray, np.ndarray]:
    """Mask batch -> (kept indices (N,) int64 into the input batch, masks (N,H,W) bool).

    Empty masks are dropped with a warning (``empty='drop'``) or refused (``empty='error'``):
    an empty instance has nothing for MIDI to reconstruct."""
    stack = as_mask_stack(masks, what)
    if image_hw is not None and len(stack):
        check_same_size(image_hw, stack.shape[1:], f"the {what}")
    empty_idx = [i for i in range(len(stack)) if not stack[i].any()]
    if empty_idx:
        if empty == "error":
            raise MIDIInputError(f"mask(s) {_listed(empty_idx)} of {len(stack)} are empty: "
                                 f"remove them from the batch or set empty_masks='drop'")
        if empty != "drop":
            raise MIDIInputError(f"empty_masks must be 'drop' or 'error', got {empty!r}")
        if len(empty_idx) < len(stack):
            warnings.warn(f"SegmentScene: dropped empty mask(s) {_listed(empty_idx)} of {len(stack)}; "
                          f"later instances move up", stacklevel=3)
    keep = np.asarray([i for i in range(len(stack)) if i not in set(empty_idx)], np.int64)
    return keep, stack[keep] if len(keep) else stack[:0]
