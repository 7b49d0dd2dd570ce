"""Seg maps (label maps) -> instance masks in the official MIDI order, refusing maps that are not one.

The official scripts read a seg PNG with ``convert("L")`` and take every non-zero grey value
as one instance, ascending. That order fixes each instance's batch index (and so its slice of
the initial noise), so it must not change. A 16-bit seg keeps its integer labels (``convert("L")``
would clip them all to 255, one object). Maps that cannot be label maps -- a photo, a JPEG, an
anti-aliased or smoothly resized map, two colours with the same grey value -- are refused.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..errors import MIDIInputError
from .arrays import check_unit_range, to_numpy
from .images import open_image
from .sizes import check_same_size

#: more distinct values than this cannot be a scene's objects (MIDI takes up to ~7)
MAX_LEVELS = 64
#: a value covering less than this share of the image is a speck, not an object
TINY_FRACTION = 2e-4
#: a value with fewer pixels whose 4 neighbours share it is an edge or noise, not a region
MIN_INTERIOR = 0.2

_FIX = ("save the seg map as PNG with one flat grey level or colour per object "
        "(no anti-aliasing; resize it with nearest-neighbour), 0 = background")


def _rgb_to_luma(rgb: np.ndarray, what: str) -> np.ndarray:
    """HxWx3 uint8 -> 'L' exactly as PIL computes it, refusing colours that would merge."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    colours, first = np.unique(packed.ravel(), return_index=True)
    if len(colours) > MAX_LEVELS:
        raise MIDIInputError(f"{what}: {len(colours)} different colours, which looks like a photo, a JPEG or an anti-aliased map, "
                             f"not a seg map: {_FIX}")
    luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
    grey = luma.ravel()[first]
    seen = {0: 0}  # grey value -> first colour with it; black is the background
    for c, v in zip(colours.tolist(), grey.tolist()):
        if v in seen and seen[v] != c:
            raise MIDIInputError(
                f"{what}: colours #{seen[v]:06x} and #{c:06x} have the same grey value {v} "
                f"(MIDI reads seg maps as grey levels), so they would "
                + ("vanish into the background" if v == 0 else "merge into one object")
                + ": repaint one of them with another colour or grey level")
        seen[v] = c
    return luma


def label_map_from_image(img: Image.Image, what: str) -> np.ndarray:
    """PIL seg map -> HxW integer labels (uint8, or int32 for 16-bit maps)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img.convert("I") if img.mode != "I" else img, dtype=np.int64)
        if arr.min(initial=0) < 0:
            raise MIDIInputError(f"{what}: negative labels; use 0 for background and positive values for objects")
        return arr.astype(np.int32) if arr.max(initial=0) > 255 else arr.astype(np.uint8)
    if img.mode == "F":
        raise MIDIInputError(f"{what}: a floating-point image is not a label map: {_FIX}")
    if img.mode in ("L", "1"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    return _rgb_to_luma(np.asarray(img.convert("RGB")), what)


def _snap_to_levels(arr: np.ndarray, what: str) -> np.ndarray:
    """0..1 floats -> 0..255 levels. Off-grid values are accepted when every distinct value
    (colour) keeps a level of its own: ComfyUI 0.27's LoadImage decodes PNGs through PyAV
    and returns flat grey 29 as 28.887, 150 as 149.4. Values that would share a level once
    rounded are noise or a smooth ramp, not flat regions, and are refused."""
    scaled = arr.astype(np.float64) * 255.0
    levels = np.round(scaled)
    if np.abs(scaled - levels).max() > 0.02:
        flat = scaled.reshape(-1, scaled.shape[-1]) if scaled.ndim == 3 else scaled.reshape(-1, 1)
        n_values = len(np.unique(flat, axis=0))
        n_levels = len(np.unique(levels.reshape(flat.shape), axis=0))
        if n_values != n_levels:
            raise MIDIInputError(f"{what}: values between grey levels (a smoothed or resized map, or a photo): {_FIX}")
    return levels.astype(np.uint8)


def to_label_map(seg, what: str = "seg map") -> np.ndarray:
    """Any seg map (PIL image, HxW or HxWx3/4 array, ComfyUI IMAGE (1,H,W,3) in 0..1) -> HxW labels.

    Colour maps become luma values exactly as PIL's ``convert("L")`` computes them (the official reading)."""
    if seg is None:
        raise MIDIInputError(f"{what}: no seg map given")
    if isinstance(seg, Image.Image):
        return label_map_from_image(seg, what)
    arr = to_numpy(seg)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise MIDIInputError(f"{what}: expected one image, got a batch of {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise MIDIInputError(f"{what}: expected an HxW or HxWx3 image, got an array of shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        check_unit_range(arr, what, "IMAGE")
        arr = _snap_to_levels(arr, what)
    elif arr.min(initial=0) < 0:
        raise MIDIInputError(f"{what}: negative labels; use 0 for background and positive values for objects")
    if arr.ndim == 2:
        return arr.astype(np.int32) if arr.max(initial=0) > 255 else arr.astype(np.uint8)
    if arr.max(initial=0) > 255:
        raise MIDIInputError(f"{what}: a colour seg map must be 8-bit (0..255 per channel)")
    return _rgb_to_luma(arr.astype(np.uint8), what)


def check_label_map(label: np.ndarray, what: str = "seg map") -> None:
    """Refuse maps whose values are not flat regions: anti-aliased edges, JPEG noise, photos."""
    values, counts = np.unique(label, return_counts=True)
    keep = values != 0
    values, counts = values[keep], counts[keep]
    if len(values) > MAX_LEVELS:
        raise MIDIInputError(f"{what}: {len(values)} different grey levels, which looks like a photo, a JPEG or an anti-aliased map, "
                             f"not a seg map: {_FIX}")
    if len(values) == 0:
        return
    h, w = label.shape
    # interior pixel: its 4 neighbours (inside the image) carry the same value
    same = np.ones(label.shape, bool)
    same[1:, :] &= label[1:, :] == label[:-1, :]
    same[:-1, :] &= label[:-1, :] == label[1:, :]
    same[:, 1:] &= label[:, 1:] == label[:, :-1]
    same[:, :-1] &= label[:, :-1] == label[:, 1:]
    idx = np.searchsorted(values, label[same & (label != 0)])
    interior = np.bincount(idx, minlength=len(values))
    tiny = counts < max(2, TINY_FRACTION * h * w)
    thin = interior < MIN_INTERIOR * counts
    bad = values[tiny | thin]
    if len(bad) == 0:
        return
    shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    if len(bad) >= 8:
        kind = "which looks like an anti-aliased map, a JPEG or a photo"
    else:
        kind = "anti-aliased edges, JPEG noise or stray pixels"
    raise MIDIInputError(f"{what}: {len(bad)} of its {len(values)} grey levels ({shown}) cover only specks or "
                         f"1-2 pixel thin lines, {kind}, not objects: {_FIX}")


def split_label_map(seg, max_instances: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label map -> (ids (N,) int64 ascending, masks (N,H,W) bool). ``max_instances`` keeps the
    first N in the official order (as the golden run does); the caller checks the count."""
    label = to_label_map(seg)
    ids = np.unique(label)
    ids = ids[ids != 0].astype(np.int64)
    if max_instances is not None:
        ids = ids[:max_instances]
    masks = np.stack([label == i for i in ids]) if len(ids) else np.zeros((0,) + label.shape, bool)
    return ids, masks


def masks_from_label_map(seg, image_hw=None, what: str = "seg map") -> tuple[np.ndarray, np.ndarray]:
    """Checked label map (PIL, array or ComfyUI IMAGE) -> (ids ascending, masks (N,H,W) bool)."""
    label = to_label_map(seg, what)
    if image_hw is not None:
        check_same_size(image_hw, label.shape, f"the {what}" if not what.startswith("-") else what)
    check_label_map(label, what)
    return split_label_map(label)


def read_label_map(path, what: str = "--seg") -> np.ndarray:
    """A seg map file -> HxW labels (upright, 16-bit kept), not yet checked (resize first, then check)."""
    return label_map_from_image(open_image(path, what), f"{what} {os.fspath(path)}")


def masks_to_label_map(masks: np.ndarray) -> np.ndarray:
    """(N,H,W) masks -> HxW uint8 label map with values 1..N (later masks win)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise MIDIInputError(f"masks: expected (N,H,W), got shape {masks.shape}")
    if masks.shape[0] > 255:
        raise MIDIInputError(f"masks: at most 255 instances fit a uint8 label map, got {masks.shape[0]}")
    label = np.zeros(masks.shape[1:], np.uint8)
    for i, m in enumerate(masks):
        label[np.asarray(m) > 0.5] = i + 1
    return label
