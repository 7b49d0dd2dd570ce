"""Normalise the images, masks and seg maps a caller may hand in (PIL, numpy, torch)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import MIDIInputError


def _to_numpy(x) -> np.ndarray:
    # torch is optional here: ComfyUI hands tensors, the CLI hands PIL/numpy.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def size_str(shape_hw) -> str:
    h, w = shape_hw[:2]
    return f"{w}x{h} (WxH)"


def as_rgb_uint8(image, what: str = "image") -> np.ndarray:
    """PIL image, HxW / HxWx3 / HxWx4 array (uint8, or float in [0,1]), or a ComfyUI
    IMAGE tensor (1,H,W,3) -> HxWx3 uint8. Alpha is dropped."""
    if image is None:
        raise MIDIInputError(f"{what}: no image given")
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = _to_numpy(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise MIDIInputError(
                f"{what}: SegmentScene takes one image, got a batch of {arr.shape[0]}; split the batch first")
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise MIDIInputError(f"{what}: expected an HxWx3 image, got an array of shape {tuple(arr.shape)}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def as_mask_stack(masks, what: str = "masks") -> np.ndarray:
    """(H,W), (N,H,W) or (N,1,H,W) masks -> (N,H,W) bool.

    Floats (ComfyUI MASK, 0..1) are foreground above 0.5; integers and bools above 0.
    """
    if masks is None:
        raise MIDIInputError(f"{what}: no masks given")
    if isinstance(masks, (list, tuple)):
        if len(masks) == 0:
            return np.zeros((0, 0, 0), bool)
        masks = np.stack([_to_numpy(m) for m in masks])
    arr = _to_numpy(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise MIDIInputError(f"{what}: expected a (N,H,W) mask batch, got shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating):
        return arr > 0.5
    return arr > 0


def check_same_size(image_hw, other_hw, what: str) -> None:
    """Masks and seg maps must match the image pixel for pixel; say both sizes if not."""
    if tuple(image_hw[:2]) != tuple(other_hw[:2]):
        raise MIDIInputError(
            f"{what} is {size_str(other_hw)} but the image is {size_str(image_hw)}: "
            f"give {what} at the image size (resize it with nearest-neighbour) or use the image it was made for")
