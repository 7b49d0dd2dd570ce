"""The official MIDI-3D code's whole process against this pack's fast path, alternating in one process.

    python -m bench.official --official-src ../MIDI-3D --model ../shared/golden/midi_tiny \\
        --image ../shared/data/examples/Realistic-Style/01_rgb.png \\
        --seg ../shared/data/examples/Realistic-Style/01_seg.png --pairs 8

Needs a checkout of github.com/VAST-AI-Research/MIDI-3D (``--official-src``) and the packages its
pipeline imports (diffusers, einops ...; ``--deps`` adds a folder holding them to the import path).
One object, depth 8 (the official decode's only depth), progressive decode, the official
smoothing and marching cubes. One untimed run of each first, then ``--pairs`` alternating pairs;
prints one JSON object: the seconds of every run (wall clock, and the CPU seconds of all the process's
threads, which show how fully each used the cores), the ratio of every pair, the ratios of the
medians, and the last pair's meshes compared (``same_meshes``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.run import example_inputs, same_meshes
from midi_model.errors import MIDIInputError

OFFICIAL_DEPTH = 8  # the official decode_latents default, which its __call__ uses


def check_official_src(path) -> Path:
    """The checkout's folder, or one clear error naming the fix."""
    src = Path(path)
    if not (src / "midi" / "pipelines" / "pipeline_midi.py").is_file():
        raise MIDIInputError(f"--official-src {path}: no midi/pipelines/pipeline_midi.py there: clone "
                             "https://github.com/VAST-AI-Research/MIDI-3D and pass its folder")
    return src


def official_runner(src: Path, model: str, img, masks, steps: int, seed: int):
    """-> run() timing the official pipeline's whole process on the first object: (seconds, meshes)."""
    sys.path.insert(0, str(src))
    import trimesh
    from midi.pipelines.pipeline_midi import MIDIPipeline as Official
    from midi.utils.smoothing import smooth_gpu
    from PIL import Image
    from skimage import measure
    import midi.models.autoencoders, midi.models.transformers, midi.schedulers.scheduling_rectified_flow  # noqa: F401 (diffusers loads them by name)

    # the official script's inputs: the object on white, its mask as 0/255, the scene
    inst = np.full_like(img, 255)
    inst[masks[0]] = img[masks[0]]
    kwargs = dict(image=[Image.fromarray(inst)], mask=[Image.fromarray((masks[0] * 255).astype(np.uint8))],
                  image_scene=[Image.fromarray(img)], attention_kwargs={"num_instances": 1},
                  num_inference_steps=steps, guidance_scale=7.0, decode_progressive=True, return_dict=False)
    pipe = Official.from_pretrained(model).to("cpu", torch.float32)
    pipe.init_custom_adapter(set_self_attn_module_names=[f"blocks.{i}" for i in range(8, 13)])

    def run():
        t = time.perf_counter()
        out = pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
        meshes = []
        for logits, gs, bs, bmin, _ in zip(*out):
            g = smooth_gpu(logits.view(gs), method="gaussian", sigma=1)
            v, f, _, _ = measure.marching_cubes(g.float().cpu().numpy(), 0, method="lewiner")
            meshes.append(trimesh.Trimesh((v / gs * bs + bmin).astype(np.float32), np.ascontiguousarray(f)))
        return time.perf_counter() - t, meshes
    return run


def ours_runner(model: str, img, masks, steps: int, seed: int):
    """-> run() timing this pack's fast path (encode, sample, default decoder, meshes): (seconds, meshes)."""
    from midi_model.meshing import DEFAULT_DECODER, decode_grids, grids_to_meshes
    from midi_model.pipeline import MIDIPipeline

    pipe = MIDIPipeline.from_pretrained(model, device="cpu", dtype="fp32", mi_mode="grouped")

    def run():
        t = time.perf_counter()
        lat = pipe.sample(pipe.encode(img, masks), seed=seed, steps=steps, guidance_scale=7.0)
        meshes = grids_to_meshes(decode_grids(pipe.vae, lat, OFFICIAL_DEPTH, DEFAULT_DECODER))
        return time.perf_counter() - t, meshes
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.official")
    ap.add_argument("--official-src", required=True, help="a checkout of VAST-AI-Research/MIDI-3D")
    ap.add_argument("--deps", default=None, help="a folder with the official pipeline's packages, put on the import path")
    ap.add_argument("--model", required=True, help="a checkpoint folder in the released layout")
    ap.add_argument("--image", required=True)
    ap.add_argument("--seg", required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    src = check_official_src(args.official_src)
    if args.deps:
        sys.path.insert(0, args.deps)
    torch.set_num_threads(args.threads)
    img, masks = example_inputs(args.image, args.seg, 1)
    official = official_runner(src, args.model, img, masks, args.steps, args.seed)
    ours = ours_runner(args.model, img, masks, args.steps, args.seed)
    official(), ours()  # untimed: first calls and allocations
    times = {"official_s": [], "ours_s": [], "official_cpu_s": [], "ours_cpu_s": []}
    meshes = {}  # the last run's of each
    for _ in range(args.pairs):
        for name, run in (("official", official), ("ours", ours)):
            cpu = time.process_time()  # every thread of the process
            wall, meshes[name] = run()
            times[f"{name}_cpu_s"].append(round(time.process_time() - cpu, 2))
            times[f"{name}_s"].append(round(wall, 3))
    ratios = [round(a / b, 1) for a, b in zip(times["official_s"], times["ours_s"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({**times, "pair_ratios": ratios,
                      "median_ratio": round(med["official_s"] / med["ours_s"], 2),
                      "median_cpu_ratio": round(med["official_cpu_s"] / med["ours_cpu_s"], 2),
                      "threads": torch.get_num_threads(), "meshes": same_meshes(meshes["official"], meshes["ours"])}, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MIDIInputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
