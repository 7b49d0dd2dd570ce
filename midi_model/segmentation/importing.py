"""Import mode: an existing label map (seg PNG) or a mask batch -> per-instance masks."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import MIDIInputError
from ..instances import split_label_map, to_label_map
from .inputs import _to_numpy, as_mask_stack, check_same_size


def masks_from_label_map(seg, image_hw=None) -> tuple[np.ndarray, np.ndarray]:
    """Label map (PIL, array or ComfyUI IMAGE) -> (ids (N,) int64 ascending, masks (N,H,W) bool).

    Exactly as the official code reads a seg PNG: ``convert('L')`` (colours become luma),
    every non-zero grey value one instance, ascending. ComfyUI IMAGE tensors (1,H,W,3) in
    [0,1] are rounded back to 0..255 first."""
    if seg is None:
        raise MIDIInputError("mode 'label_map' needs a seg map image (each object one grey level or colour, 0 = background)")
    if hasattr(seg, "detach") or (isinstance(seg, np.ndarray) and seg.ndim == 4):
        arr = _to_numpy(seg)
        if arr.ndim == 4:
            if arr.shape[0] != 1:
                raise MIDIInputError(f"seg map: expected one image, got a batch of {arr.shape[0]}")
            arr = arr[0]
        seg = arr
    try:
        label = to_label_map(seg)
    except ValueError as e:
        raise MIDIInputError(str(e)) from None
    if image_hw is not None:
        check_same_size(image_hw, label.shape, "the seg map")
    return split_label_map(label)


def masks_from_batch(masks, image_hw=None, empty: str = "drop") -> tuple[np.ndarray, np.ndarray]:
    """Mask batch -> (kept indices (N,) int64 into the input batch, masks (N,H,W) bool).

    Empty masks are dropped with a warning (``empty='drop'``) or refused (``empty='error'``):
    an empty instance has nothing for MIDI to reconstruct."""
    stack = as_mask_stack(masks)
    if image_hw is not None and len(stack):
        check_same_size(image_hw, stack.shape[1:], "the masks")
    empty_idx = [i for i in range(len(stack)) if not stack[i].any()]
    if empty_idx:
        listed = ", ".join(str(i + 1) for i in empty_idx)
        if empty == "error":
            raise MIDIInputError(
                f"mask(s) {listed} of {len(stack)} are empty: remove them from the batch or set empty_masks='drop'")
        if empty != "drop":
            raise MIDIInputError(f"empty_masks must be 'drop' or 'error', got {empty!r}")
        if len(empty_idx) < len(stack):
            warnings.warn(f"SegmentScene: dropped empty mask(s) {listed} of {len(stack)}; "
                          f"later instances move up", stacklevel=3)
    keep = np.asarray([i for i in range(len(stack)) if i not in set(empty_idx)], np.int64)
    return keep, stack[keep] if len(keep) else stack[:0]
