"""Scene images: files (EXIF orientation, 16-bit, palette, alpha) and arrays/tensors -> HxWx3 uint8."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MIDIInputError
from .arrays import check_unit_range, to_numpy


def open_image(path, what: str = "image") -> Image.Image:
    """Open and fully read an image file, upright (EXIF orientation applied, as viewers show it)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MIDIInputError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise MIDIInputError(f"{what} {path}: is a folder, not an image file")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise MIDIInputError(f"{what} {path}: not an image PIL can read (use PNG or JPEG)") from None
    except PermissionError:
        raise MIDIInputError(f"{what} {path}: not readable (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MIDIInputError(f"{what} {path}: a damaged or truncated image ({e}): save it again") from None
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated GIF/PNG, multi-page TIFF: the first frame, as viewers show it
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: the pixels as stored
        return img


def _wide_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer pixels of more than 8 bits -> 0..1 floats (16-bit PNG/TIFF)."""
    top = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return np.clip(arr.astype(np.float64) / top, 0, 1)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxW, HxWx3 or HxWx4 array, uint8 or float 0..1 (never clipped to white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _wide_to_unit(np.asarray(img.convert("I") if img.mode != "I" else img, dtype=np.int64))
    if img.mode == "F":
        return np.asarray(img, dtype=np.float64)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def _over_white(arr: np.ndarray) -> np.ndarray:
    """RGBA -> RGB on white: what the hidden colour under a transparent pixel is, is arbitrary."""
    a = arr[..., 3:4].astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)
    rgb = arr[..., :3].astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)
    return rgb * a + (1.0 - a)


def as_rgb_uint8(image, what: str = "image") -> np.ndarray:
    """PIL image, HxW / HxWx{1,3,4} array (uint8, 16-bit, or floats in 0..1), or a ComfyUI IMAGE
    tensor (1,H,W,C) -> HxWx3 uint8. Transparent pixels become white."""
    if image is None:
        raise MIDIInputError(f"{what}: no image given")
    arr = _pil_to_array(image) if isinstance(image, Image.Image) else to_numpy(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise MIDIInputError(f"{what}: a batch of {arr.shape[0]} images, but MIDI takes one scene image: "
                                 f"pick one (e.g. Image From Batch) first")
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.size == 0:
        raise MIDIInputError(f"{what}: expected an HxWx3 image, got an array of shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        check_unit_range(arr, what, "IMAGE")
        arr = np.clip(arr, 0.0, 1.0)
    elif arr.dtype != np.uint8:
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise MIDIInputError(f"{what}: integer pixels from {arr.min()} to {arr.max()}: "
                                 f"give 8-bit (0..255) or 16-bit (0..65535) values")
        arr = _wide_to_unit(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        opaque = arr[..., 3] == (255 if arr.dtype == np.uint8 else 1.0)
        arr = arr[..., :3] if opaque.all() else _over_white(arr)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def read_image(path, what: str = "--image") -> np.ndarray:
    """An image file -> HxWx3 uint8, upright."""
    return as_rgb_uint8(open_image(path, what), f"{what} {os.fspath(path)}")
