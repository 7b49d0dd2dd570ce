"""Keep only the running stage's modules on the compute device.

The pipeline's stages run wherever their modules sit (``pipeline.py``), so memory is
managed from outside by moving modules between stages. These are plain functions and
context managers so that a host (ComfyUI's model management, the benchmarks, the CLI)
can drive the same hooks:

    with stage(pipe, "encode", "cuda", offload="model"):
        cond = pipe.encode(image, masks)
    with stage(pipe, "sample", "cuda", offload="model"):
        latents = pipe.sample(cond, ...)
    with stage(pipe, "decode", "cuda", offload="model"):
        meshes = pipe.decode(latents, ...)

offload modes:
* "none": everything stays on the device (fastest; needs room for all components);
* "model": a stage's modules go to the device on entry and back to the offload device
  (CPU) on exit, so the peak is the largest stage, not the sum of all.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .pipeline import STAGES
OFFLOAD_MODES = ("none", "model")


def stage_modules(pipe, name: str) -> dict:
    if name not in STAGES:
        raise ValueError(f"stage {name!r}: use one of {tuple(STAGES)}")
    mods = pipe.modules()
    return {k: mods[k] for k in STAGES[name]}


def move(modules, device) -> None:
    for m in modules:
        m.to(device)


def _free_cache(device) -> None:
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare(pipe, name: str, device, offload: str = "model", offload_device="cpu") -> None:
    """Before a stage: with "model", every other stage's modules leave the device first
    (so the device never holds two stages), then this stage's modules arrive."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload {offload!r}: use one of {OFFLOAD_MODES}")
    if offload == "model":
        keep = set(STAGES[name])
        move([m for k, m in pipe.modules().items() if k not in keep], offload_device)
        _free_cache(device)
    move(stage_modules(pipe, name).values(), device)


def release(pipe, name: str, device, offload: str = "model", offload_device="cpu") -> None:
    """After a stage: with "model", its modules go back to the offload device."""
    if offload == "model":
        move(stage_modules(pipe, name).values(), offload_device)
        _free_cache(device)


@contextmanager
def stage(pipe, name: str, device, offload: str = "model", offload_device="cpu"):
    """Run a block with this stage's modules on ``device``; see the module docstring."""
    prepare(pipe, name, device, offload, offload_device)
    try:
        yield pipe
    finally:
        release(pipe, name, device, offload, offload_device)
