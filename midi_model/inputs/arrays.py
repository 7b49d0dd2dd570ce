"""PIL / numpy / torch -> numpy, and the value checks every array input shares."""
from __future__ import annotations

import numpy as np

from ..errors import MIDIInputError


def to_numpy(x) -> np.ndarray:
    # torch is optional here: ComfyUI hands tensors, the CLI hands PIL/numpy.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def check_unit_range(arr: np.ndarray, what: str, kind: str) -> None:
    """Float pixels must be finite and in 0..1 (ComfyUI's IMAGE and MASK convention)."""
    if not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
        return
    finite = np.isfinite(arr)
    if not finite.all():
        raise MIDIInputError(f"{what}: {int((~finite).sum())} values are NaN or infinite: "
                             f"fix the node that made this {kind}")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise MIDIInputError(f"{what}: values from {lo:g} to {hi:g}, but {kind} values go from 0 to 1: "
                             f"clamp or normalise it first")
