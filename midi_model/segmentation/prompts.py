"""Parse the user's prompts: text labels, boxes and points (as text or arrays).

Grammar (pixels of the input image, origin top-left, x to the right, y down):

* labels: ``sofa. table. lamp`` -- separated by ``.``, ``,``, ``;`` or new lines.
* boxes:  ``x0,y0,x1,y1; x0,y0,x1,y1`` -- one instance per box; boxes separated by ``;``
  or new lines, numbers by ``,`` or spaces; brackets are ignored.
* points: ``x,y[,label]; x,y[,label] | x,y[,label]`` -- ``|`` (or a new line) separates
  instances, ``;`` separates the points of one instance; label 1 = on the object
  (default), 0 = not on it. Every instance needs at least one label-1 point.
  Example: ``120,80 | 300,200; 310,260,0`` -> two instances.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import MIDIInputError
from ..inputs import size_str

_NUM_SPLIT = re.compile(r"[,\s]+")


def parse_labels(prompt) -> list[str]:
    """``'Sofa. table, lamp'`` or ``['sofa', 'table']`` -> ``['sofa', 'table', 'lamp']`` (lower case,
    Grounding DINO's convention; duplicates dropped, order kept)."""
    if prompt is None:
        return []
    parts = prompt if isinstance(prompt, (list, tuple)) else re.split(r"[.,;\n]+", str(prompt))
    labels: list[str] = []
    for p in parts:
        p = " ".join(str(p).strip().strip(".").lower().split())
        if p and p not in labels:
            labels.append(p)
    return labels


def _numbers(text: str, what: str) -> list[float]:
    text = text.strip().strip("[]()").strip()
    try:
        return [float(t) for t in _NUM_SPLIT.split(text) if t]
    except ValueError:
        raise MIDIInputError(f"{what} {text!r}: expected numbers, e.g. 10,20,200,180") from None


def _check_finite(arr: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise MIDIInputError(f"{what}: coordinates must be finite numbers, got {arr.tolist()}")


def parse_boxes(boxes, image_hw=None) -> np.ndarray:
    """Text or (K,4) array -> (K,4) float32 x0,y0,x1,y1 in pixels, corners sorted and clipped
    to the image; a box with no area inside the image is an error."""
    if boxes is None:
        return np.zeros((0, 4), np.float32)
    if isinstance(boxes, str):
        rows = []
        for i, chunk in enumerate(p for p in re.split(r"[;\n]+", boxes) if p.strip()):
            nums = _numbers(chunk, f"box {i + 1}")
            if len(nums) != 4:
                raise MIDIInputError(
                    f"box {i + 1} {chunk.strip()!r}: expected 4 numbers x0,y0,x1,y1, got {len(nums)}; "
                    f"separate boxes with ';'")
            rows.append(nums)
        arr = np.asarray(rows, np.float64).reshape(-1, 4)
    else:
        arr = np.asarray(boxes, np.float64)
        if arr.ndim == 1 and arr.size == 4:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise MIDIInputError(f"boxes: expected shape (K,4) x0,y0,x1,y1, got {arr.shape}")
    _check_finite(arr, "boxes")
    arr = np.concatenate([np.minimum(arr[:, :2], arr[:, 2:]), np.maximum(arr[:, :2], arr[:, 2:])], axis=1)
    if image_hw is not None:
        h, w = image_hw[:2]
        clipped = np.clip(arr, 0, [w, h, w, h])
        for i, (orig, c) in enumerate(zip(arr, clipped)):
            if c[2] - c[0] <= 0 or c[3] - c[1] <= 0:
                raise MIDIInputError(
                    f"box {i + 1} {orig.tolist()} has no area inside the image {size_str(image_hw)}: "
                    f"give pixel corners x0,y0,x1,y1 with x0<x1 and y0<y1 inside the image")
        arr = clipped
    return arr.astype(np.float32)


def _group_array(group, what: str) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(group, np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in (2, 3) or len(arr) == 0:
        raise MIDIInputError(f"{what}: expected points as (P,2) x,y or (P,3) x,y,label, got shape {arr.shape}")
    labels = arr[:, 2] if arr.shape[1] == 3 else np.ones(len(arr))
    if not np.all(np.isin(labels, (0, 1))):
        raise MIDIInputError(f"{what}: point labels must be 1 (on the object) or 0 (not on it), got {labels.tolist()}")
    return arr[:, :2], labels.astype(np.int64)


def parse_points(points, image_hw=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Text (see the module grammar), a (P,2|3) array (one instance), a (G,P,2|3) array or a
    list of per-instance arrays -> list of (coords (P,2) float32, labels (P,) int64), one per instance."""
    if points is None:
        return []
    groups = []
    if isinstance(points, str):
        for gi, gtext in enumerate(p for p in re.split(r"[|\n]+", points) if p.strip()):
            rows = []
            for chunk in (c for c in gtext.split(";") if c.strip()):
                nums = _numbers(chunk, f"point {chunk.strip()!r} of instance {gi + 1}")
                if len(nums) not in (2, 3):
                    raise MIDIInputError(
                        f"point {chunk.strip()!r} of instance {gi + 1}: expected x,y or x,y,label; "
                        f"separate points with ';' and instances with '|'")
                rows.append(nums if len(nums) == 3 else nums + [1.0])
            groups.append(_group_array(rows, f"instance {gi + 1}"))
    else:
        seq = list(points) if isinstance(points, (list, tuple)) else [points]
        # a flat list of points ([[x, y], [x, y, l]]) is one instance, as a (P,2|3) array is;
        # a (G,P,2|3) array or a list of such (P,2|3) arrays is one instance per entry
        if seq and all(np.ndim(e) == 1 for e in seq):
            seq = [seq]
        elif len(seq) == 1 and np.ndim(seq[0]) == 3:
            seq = list(np.asarray(seq[0]))
        groups = [_group_array(g, f"instance {i + 1}") for i, g in enumerate(seq)]
    out = []
    for i, (xy, lab) in enumerate(groups):
        _check_finite(xy, f"instance {i + 1}")
        if not (lab == 1).any():
            raise MIDIInputError(
                f"instance {i + 1} has no point with label 1: every instance needs at least one point on the object")
        if image_hw is not None:
            h, w = image_hw[:2]
            bad = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
            if bad.any():
                raise MIDIInputError(
                    f"instance {i + 1}: point {xy[bad][0].tolist()} lies outside the image {size_str(image_hw)}; "
                    f"points are pixel x,y from the top-left corner")
        out.append((xy.astype(np.float32), lab))
    return out
