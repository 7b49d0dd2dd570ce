"""Image sizes: the smallest usable image, same-size and same-aspect checks, --size."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import MIDIInputError

#: below this the encoders' 224-px inputs are mostly upscaling blur
MIN_IMAGE_SIDE = 32


def size_str(shape_hw) -> str:
    h, w = shape_hw[:2]
    return f"{w}x{h} (WxH)"


def check_image_size(hw, what: str = "image") -> None:
    h, w = hw[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise MIDIInputError(f"{what} is {size_str(hw)}: at least {MIN_IMAGE_SIDE} px per side is needed; upscale it")


def check_same_size(image_hw, other_hw, what: str) -> None:
    """Masks and seg maps must match the image pixel for pixel; say both sizes if not."""
    if tuple(image_hw[:2]) != tuple(other_hw[:2]):
        raise MIDIInputError(
            f"{what}: {size_str(other_hw)}, but the image is {size_str(image_hw)}: "
            f"give {what} at the image size (resize with nearest-neighbour) or use the image it was made for")


def check_aspect(image_hw, other_hw, what: str) -> None:
    """Before a resize: another size is fine, another shape would stretch one against the other."""
    (h, w), (oh, ow) = image_hw[:2], other_hw[:2]
    # equal up to one pixel of rounding on the other's scale
    if abs(ow * h - oh * w) > max(h, w, oh, ow):
        raise MIDIInputError(
            f"{what}: {size_str(other_hw)}, but the image is {size_str(image_hw)}, another aspect ratio: "
            f"resizing would stretch one against the other; give {what} made for this image")


def fit_size(hw, size: int) -> tuple[int, int]:
    """(h, w) scaled so that the longer side is ``size``; the aspect ratio is kept."""
    h, w = hw[:2]
    if size < MIN_IMAGE_SIDE:
        raise MIDIInputError(f"size {size}: use at least {MIN_IMAGE_SIDE} (the longer side in pixels)")
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    check_image_size((nh, nw), f"the image resized to {size}")
    return nh, nw


def warn_outside_centre_square(masks: np.ndarray) -> None:
    """The image processors resize the shorter side and crop the centre square: on a wide or tall
    image, objects beyond that square are cut from what the encoders see. Say which ones."""
    h, w = masks.shape[1:]
    if h == w:
        return
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    inside = np.zeros((h, w), bool)
    inside[y0:y0 + s, x0:x0 + s] = True
    cut = [i + 1 for i, m in enumerate(masks) if (m & ~inside).any()]
    if cut:
        warnings.warn(f"the image is {size_str((h, w))}, not square: the image encoders see only its centre "
                      f"{s}x{s} square, and object(s) {', '.join(map(str, cut))} reach outside it: set "
                      f"image_padding (pads the scene to a square) or crop/pad the image to a square", stacklevel=3)
