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

from .meshing import DEFAULT_DECODER

STAGES = {"encode": ("image_encoder_1", "image_encoder_2"), "sample": ("transformer",), "decode": ("vae",)}
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


def run_pipeline(pipe, image, masks, device, offload: str = "model", seed: int = 42, steps: int = 50,
                 guidance_scale: float = 7.0, octree_depth: int = 8, decoder: str = DEFAULT_DECODER,
                 smoothing: bool = True, timings: dict | None = None, **decode_kwargs):
    """The whole pipeline with stage-wise placement; ``timings`` receives seconds per stage."""
    import time

    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    t = {}
    t0 = time.perf_counter()
    with stage(pipe, "encode", device, offload):
        cond = pipe.encode(image, masks)
        sync()
    t1 = time.perf_counter()
    with stage(pipe, "sample", device, offload):
        lat = pipe.sample(cond, seed=seed, steps=steps, guidance_scale=guidance_scale)
        sync()
    t2 = time.perf_counter()
    with stage(pipe, "decode", device, offload):
        meshes = pipe.decode(lat, octree_depth=octree_depth, decoder=decoder, smoothing=smoothing, **decode_kwargs)
        sync()
    t3 = time.perf_counter()
    t.update(encode=t1 - t0, sample=t2 - t1, decode=t3 - t2, total=t3 - t0)
    if timings is not None:
        timings.update(t)
    return meshes, lat
