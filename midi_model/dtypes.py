"""Weight precision: the names every front end accepts and what "auto" means.

The CLI, the library, the bench and the ComfyUI loader all resolve a dtype here; a host
may pass its own ``auto`` policy (ComfyUI's model management) but not its own names.
"""
from __future__ import annotations

import torch

from .errors import MIDIInputError

DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def auto_dtype(device) -> torch.dtype:
    """bf16 on CUDA with bf16 support, fp16 on other CUDA, fp32 elsewhere (CPU)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_dtype(dtype, device, auto=None) -> torch.dtype:
    """None / "auto" -> ``auto(device)`` (default :func:`auto_dtype`); a name or torch.dtype -> torch.dtype."""
    if dtype is None or dtype == "auto":
        return (auto or auto_dtype)(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise MIDIInputError(f"dtype {dtype!r}: use one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[dtype]
