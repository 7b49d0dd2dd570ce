"""Re-roll benchmark: re-sampling 1 of N objects (the others kept) against a full run, same process.

    python -m bench.reroll --preset medium --instances 4 --steps 4 --depth 7 --device cpu

Full run: sample N objects recording the trajectory, decode N meshes. Re-roll: sample with
N-1 objects replayed from the recording and 1 re-sampled, decode that 1 (the kept meshes come
from the cache the full run filled). Prints one JSON object: seconds per stage, the ratios,
the trajectory's size, and checks that the kept objects came out identical.
The model is a preset with random weights, its VAE field made object-like as in bench.run.
"""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

from bench.run import Meter, make_bench_field, run_settings, scene_inputs
from midi_model.mesh_cache import MeshCache
from midi_model.meshing import DEFAULT_DECODER
from midi_model.pipeline import MIDIPipeline
from midi_model.testing import write_random_checkpoint


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.reroll")
    ap.add_argument("--preset", default="medium", choices=["tiny", "medium", "full"])
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=7.0)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--decoder", default=DEFAULT_DECODER)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--reroll", type=int, default=2, help="the object re-rolled (from 1)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    dev, dtype, res = run_settings(args)
    res.update(decoder=args.decoder, dtype=str(dtype).replace("torch.", ""))
    img, masks = scene_inputs(args.instances)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_random_checkpoint(tmp, args.preset, seed=0, dtype=torch.float32 if dev.type == "cpu" else torch.bfloat16)
        pipe = MIDIPipeline.from_pretrained(root, device=dev, dtype=dtype)
    m = Meter(dev)
    cond = pipe.encode(img, masks)
    # warm-up (kernels, allocator) so neither side pays it
    pipe.sample(cond, seed=0, steps=1, guidance_scale=args.guidance)
    res["bench_field"] = make_bench_field(pipe.vae, pipe.sample(cond, seed=0, steps=1, guidance_scale=args.guidance))
    dkw = dict(octree_depth=args.depth, decoder=args.decoder)
    cache = MeshCache(max_bytes=1 << 40)
    with m("full_sample"):
        rec = pipe.sample_recorded(cond, seed=42, steps=args.steps, guidance_scale=args.guidance)
    with m("full_decode"):
        full_meshes, _ = pipe.decode_reusing(rec.final, cache, **dkw)
    k = args.reroll - 1
    with m("reroll_sample"):
        rr = pipe.resample(cond, rec, reroll=[k], seed=7)
    with m("reroll_decode"):
        rr_meshes, reused = pipe.decode_reusing(rr.final, cache, reusable=[s is not None for s in rr.sources], **dkw)
    t = {name: v["s"] for name, v in m.out.items()}
    full, reroll = t["full_sample"] + t["full_decode"], t["reroll_sample"] + t["reroll_decode"]
    kept = [i for i in range(args.instances) if i != k]
    res.update({
        "seconds": t, "peak_gib": {name: v["peak_gib"] for name, v in m.out.items()},
        "full_s": round(full, 3), "reroll_s": round(reroll, 3),
        "reroll_over_full": round(reroll / full, 3),
        "reroll_sample_over_full_sample": round(t["reroll_sample"] / t["full_sample"], 3),
        "reroll_decode_over_full_decode": round(t["reroll_decode"] / t["full_decode"], 3),
        "meshes_reused": reused,
        "trajectory_mb": round(rec.nbytes / 2 ** 20, 2),
        "trajectory_mb_per_object_at_50_steps_released": round(51 * 2048 * 64 * 4 / 2 ** 20, 1),
        "kept_latents_identical": bool(torch.equal(rr.latents[:, kept], rec.latents[:, kept])),
        "kept_meshes_identical": all(np.array_equal(rr_meshes[i].vertices, full_meshes[i].vertices)
                                     and np.array_equal(rr_meshes[i].faces, full_meshes[i].faces) for i in kept),
        "rerolled_latent_change": float((rr.final[k] - rec.final[k]).abs().max()),
    })
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
