"""End-to-end benchmark: the fast path against the exact (official) path, same process.

    python -m bench.run --preset medium --instances 3 --steps 4 --depth 8 --device cpu
    python -m bench.run --model ../shared/golden/midi_tiny --image IMG --seg SEG --instances 3 --steps 4 --depth 8

With ``--model`` a real checkpoint folder (e.g. the golden tiny one) and a real image +
seg map are used as they are (no bench field): its VAE field is what the decoders see.

Builds a preset model with random weights (testing.write_random_checkpoint into a temp
dir), runs encode -> sample -> decode for N instances, and prints one JSON object with
per-stage seconds, peak memory, points queried, mesh equality and the ratios against
the exact path: official progressive dense decode, exact multi-instance attention
(K/V copied per instance), float32, SDPA.

Random weights give a noise-like field, so the bench makes the VAE field object-like
(bench only, printed under "bench_field"): the query embedding keeps only the two
lowest frequencies (higher-frequency columns of proj_query zeroed) and proj_out's bias
is shifted so 25 % of a coarse grid is inside (<= 0) for the sampled latents.

The exact decode at depth 8 queries 2 x 257^3 points per instance; where that would
take too long on a CPU, ``--exact-decode estimate`` times the first chunks and scales
(reported as "estimated"); meshes are then compared at ``--compare-depth``.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time

import numpy as np
import torch

from midi_model import offload
from midi_model.dtypes import resolve_dtype
from midi_model.meshing import BBOX_MAX, BBOX_MIN, DEFAULT_DECODER, decode_grids, grid_points, grids_to_meshes
from midi_model.pipeline import MIDIPipeline
from midi_model.testing import write_random_checkpoint

KEEP_FREQS = 2
INSIDE_FRACTION = 0.25


def scene_inputs(n: int, size: int = 256, seed: int = 0):
    """A synthetic image with n coloured discs and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size, 3), 230, np.uint8)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        cx, cy = (i + 0.5) * size / n, size / 2 + rng.uniform(-size / 6, size / 6)
        r = size / (2.5 * n) + 4
        m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        masks[i] = m
        img[m] = rng.integers(20, 220, 3)
    return img, masks


@torch.no_grad()
def make_bench_field(vae, latents: torch.Tensor) -> dict:
    """Smooth the random VAE field and put its zero level around an object-like region."""
    w = vae.decoder.proj_query.weight
    nf = vae.config.embed_frequency
    for blk in range(6):  # sin x, sin y, sin z, cos x, cos y, cos z: nf columns each after xyz
        w[:, 3 + blk * nf + KEEP_FREQS: 3 + (blk + 1) * nf] = 0
    pts, _, _ = grid_points(BBOX_MIN, BBOX_MAX, 4)
    p = next(vae.parameters())
    vals = vae.decode(latents.to(p.device, p.dtype), torch.from_numpy(pts)[None].expand(latents.shape[0], -1, -1)
                      .to(p.device, p.dtype)).float()
    t = float(torch.quantile(vals.flatten().cpu(), INSIDE_FRACTION))
    vae.decoder.proj_out.bias += t  # field = -proj_out(.): shifts the field by -t
    return {"keep_frequencies": KEEP_FREQS, "inside_fraction": INSIDE_FRACTION, "bias_shift": t}


class Meter:
    """Seconds and peak memory per stage (CUDA: max_memory_allocated; CPU: process max RSS)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.out = {}

    def __call__(self, name):
        meter = self

        class _Ctx:
            def __enter__(self):
                if meter.device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                if meter.device.type == "cuda":
                    torch.cuda.synchronize()
                    peak = torch.cuda.max_memory_allocated() / 2 ** 30
                else:
                    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
                meter.out[name] = {"s": round(time.perf_counter() - self.t, 3), "peak_gib": round(peak, 3)}
        return _Ctx()


def mi_kv_bytes(pipe, n: int, cfg_batch: bool, dtype) -> dict:
    """K/V bytes one multi-instance self-attention holds: exact copies them per instance."""
    c = pipe.transformer.config
    scenes = 2 if cfg_batch else 1
    per = scenes * n * (c.num_tokens + 1) * c.width * 2 * torch.tensor([], dtype=dtype).element_size()
    return {"grouped": per, "exact": per * n}


def run_decode(pipe, lat, depth, decoder, meter, name, **kw):
    """Decode + mesh, timed as one stage; the grid / smoothing + marching cubes split is
    recorded under the stage as grids_s / meshes_s, and the time spent inside the VAE's
    point queries (wall time while any runs; the rest of grids_s is choosing the points) as queries_s."""
    rec = {}
    spent = [0.0]
    real = pipe.vae.query
    busy = {"n": 0, "since": 0.0}
    lock = threading.Lock()

    def timed_query(context, points, keys=None):
        # wall time while at least one query runs (CPU queries run in parallel streams)
        with lock:
            if busy["n"] == 0:
                busy["since"] = time.perf_counter()
            busy["n"] += 1
        try:
            out = real(context, points, keys)
            if out.device.type == "cuda":
                torch.cuda.synchronize()
        finally:
            with lock:
                busy["n"] -= 1
                if busy["n"] == 0:
                    spent[0] += time.perf_counter() - busy["since"]
        return out
    pipe.vae.query = timed_query
    try:
        with meter(name):
            t = time.perf_counter()
            grids = decode_grids(pipe.vae, lat, depth, decoder, record=rec, **kw)
            t1 = time.perf_counter()
            meshes = grids_to_meshes(grids)
            t2 = time.perf_counter()
    finally:
        del pipe.vae.query
    meter.out[name].update(grids_s=round(t1 - t, 3), queries_s=round(spent[0], 3), meshes_s=round(t2 - t1, 3))
    return meshes, rec


def warm_up(pipe, img, masks, seed, dev, offload_mode, depth):
    """One untimed small run of every stage and both decoders, so one-time costs (imports,
    first-call allocations, thread pools) are charged to neither path; and one decode of the
    first object at the bench's depth with the fast decoder (a process's first 257^3 arrays
    cost fresh pages from the system; a host that has decoded once does not pay that again)."""
    with offload.stage(pipe, "encode", dev, offload_mode):
        cond = pipe.encode(img, masks)
    with offload.stage(pipe, "sample", dev, offload_mode):
        lat = pipe.sample(cond, seed=seed, steps=1)
    with offload.stage(pipe, "decode", dev, offload_mode):
        for decoder in ("progressive", DEFAULT_DECODER):
            grids_to_meshes(decode_grids(pipe.vae, lat, 5, decoder))
        grids_to_meshes(decode_grids(pipe.vae, lat[:1], depth, DEFAULT_DECODER))


def estimate_dense_decode(pipe, lat, depth, chunks: int = 4, chunk: int = 50_000) -> float:
    """Seconds the official progressive decode would take: time a few dense chunks, scale to
    2 passes x n x (2^d+1)^3 points, plus the smoothing + marching cubes measured separately."""
    p = next(pipe.vae.parameters())
    pts, _, _ = grid_points(BBOX_MIN, BBOX_MAX, depth)
    n = lat.shape[0]
    with torch.no_grad():
        ctx = pipe.vae.latent_context(lat.to(p.device, p.dtype))
        sub = torch.from_numpy(pts[: chunks * chunk])[None].expand(n, -1, -1).to(p.device, p.dtype)
        t = time.perf_counter()
        for s in range(0, sub.shape[1], chunk):
            pipe.vae.query(ctx, sub[:, s:s + chunk])
        if p.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return dt / sub.shape[1] * pts.shape[0] * 2


def same_meshes(a, b) -> dict:
    """Exact path meshes a vs fast path meshes b: faces equal, vertex difference, face and
    piece counts, Hausdorff distance between the vertex sets."""
    from scipy.spatial import cKDTree

    def hausdorff(x, y):
        if len(x.vertices) == 0 or len(y.vertices) == 0:
            return 0.0 if len(x.vertices) == len(y.vertices) else float("inf")
        return float(max(cKDTree(x.vertices).query(y.vertices)[0].max(), cKDTree(y.vertices).query(x.vertices)[0].max()))

    faces_equal = all(np.array_equal(np.asarray(x.faces), np.asarray(y.faces)) for x, y in zip(a, b))
    vmax = max((float(np.abs(np.asarray(x.vertices) - np.asarray(y.vertices)).max())
                if len(x.vertices) and x.vertices.shape == y.vertices.shape else (0.0 if x.vertices.shape == y.vertices.shape else float("inf")))
               for x, y in zip(a, b))
    return {"faces_equal": bool(faces_equal), "max_vertex_diff": vmax,
            "faces_exact": [int(len(x.faces)) for x in a], "faces_fast": [int(len(y.faces)) for y in b],
            "pieces_exact": [len(x.split(only_watertight=False)) for x in a],
            "pieces_fast": [len(y.split(only_watertight=False)) for y in b],
            "hausdorff": [hausdorff(x, y) for x, y in zip(a, b)]}


def example_inputs(image: str, seg: str, n: int):
    """An image + seg map as the CLI reads them, the first n instances in the official order."""
    from midi_model.inputs.images import read_image
    from midi_model.inputs.labels import read_label_map, split_label_map

    img = read_image(image)
    _, masks = split_label_map(read_label_map(seg), max_instances=n)
    return img, masks


def run_settings(args) -> tuple[torch.device, torch.dtype, dict]:
    """Threads, device and dtype from the parsed arguments -> (device, dtype, the JSON fields
    every bench prints about where it ran)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, dev)
    where = {"preset": args.preset, "instances": args.instances, "steps": args.steps, "depth": args.depth,
             "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
             "threads": torch.get_num_threads()}
    return dev, dtype, where


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.run")
    ap.add_argument("--preset", default="medium", choices=["tiny", "medium", "full"])
    ap.add_argument("--model", default=None, help="a checkpoint folder (e.g. ../shared/golden/midi_tiny) instead of a random preset")
    ap.add_argument("--image", default=None, help="with --model: scene image (default: synthetic discs)")
    ap.add_argument("--seg", default=None, help="with --model: its seg map")
    ap.add_argument("--margin", type=float, default=None)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=7.0)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="fast path dtype: auto (bf16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    ap.add_argument("--coarse-depth", type=int, default=None)
    ap.add_argument("--band", type=int, default=None)
    ap.add_argument("--offload", default="model", choices=list(offload.OFFLOAD_MODES))
    ap.add_argument("--exact", default="auto", choices=["auto", "full", "estimate", "skip"],
                    help="exact path decode: run it, estimate it from a few chunks, or skip the exact path")
    ap.add_argument("--compare-depth", type=int, default=6, help="mesh comparison depth when the exact decode is estimated")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1,
                    help="fast path runs (half before the exact path, half after); the median one is reported")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    dev, dtype, res = run_settings(args)
    res.update(guidance=args.guidance, fast_dtype=str(dtype).replace("torch.", ""), offload=args.offload)
    if args.image and args.seg:
        img, masks = example_inputs(args.image, args.seg, args.instances)
        res.update(image=args.image, instances=int(masks.shape[0]))
    else:
        img, masks = scene_inputs(args.instances)
    if args.model:
        res["model"] = args.model
        pipe = MIDIPipeline.from_pretrained(args.model, device="cpu", dtype=dtype, mi_mode="grouped")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            root = write_random_checkpoint(tmp, args.preset, seed=0, dtype=torch.float32 if dev.type == "cpu" else torch.bfloat16)
            res["build_s"] = round(time.perf_counter() - t, 2)
            pipe = MIDIPipeline.from_pretrained(root, device="cpu", dtype=dtype, mi_mode="grouped")
    m = Meter(dev)
    warm_up(pipe, img, masks, args.seed, dev, args.offload, args.depth)
    kw = {"coarse_depth": args.coarse_depth, "band": args.band, "margin": args.margin}
    res["fast_decoder"] = DEFAULT_DECODER
    fast_stages = [f"fast_{s}" for s in ("encode", "sample", "decode")]
    runs = []

    def fast_path():
        """One run of the fast path; its stage times go to ``runs``."""
        with offload.stage(pipe, "encode", dev, args.offload), m("fast_encode"):
            cond = pipe.encode(img, masks)
        with offload.stage(pipe, "sample", dev, args.offload), m("fast_sample"):
            lat = pipe.sample(cond, seed=args.seed, steps=args.steps, guidance_scale=args.guidance)
        offload.prepare(pipe, "decode", dev, args.offload)
        if not args.model and "bench_field" not in res:  # once: it shifts the VAE's output bias
            res["bench_field"] = make_bench_field(pipe.vae, lat)
        meshes, rec = run_decode(pipe, lat, args.depth, DEFAULT_DECODER, m, "fast_decode", **kw)
        offload.release(pipe, "decode", dev, args.offload)
        runs.append({k: dict(m.out[k]) for k in fast_stages})
        return lat, meshes, rec

    # ---- fast path: --repeat runs, half before the exact path and half after (the machine's
    # speed drifts over a minute-long exact run); the run of median total time is reported
    before = (args.repeat + 1) // 2
    lat, fast_meshes, rec = fast_path()
    for _ in range(before - 1):
        fast_path()
    res["points_queried"] = rec["points_queried"]
    res["dense_points_official"] = rec["dense_points_official"]
    res["fraction_of_official_queries"] = rec["points_queried"] / rec["dense_points_official"]
    res["fraction_of_one_dense_grid_per_instance"] = rec["points_queried"] / rec["dense_points_official"] * 2
    res["mesh_pass_fraction"] = [s["mesh_pass"]["fraction"] for s in rec["hierarchical_stats"]]
    res["mi_kv_bytes_per_layer"] = mi_kv_bytes(pipe, args.instances, args.guidance > 1, dtype)
    # ---- exact path: float32, exact MI, official progressive decode
    if args.exact != "skip":
        exact_pipe = pipe
        if dtype != torch.float32:
            if args.model:  # the checkpoint's own values in float32, not the fast path's rounded ones
                exact_pipe = MIDIPipeline.from_pretrained(args.model, device="cpu", dtype=torch.float32, mi_mode="exact")
            else:  # a preset checkpoint is written in the fast dtype: float32 holds it exactly
                pipe.to(dtype=torch.float32)
        exact_pipe.transformer.set_attention(mi_mode="exact")
        with offload.stage(exact_pipe, "encode", dev, args.offload), m("exact_encode"):
            cond_x = exact_pipe.encode(img, masks)
        with offload.stage(exact_pipe, "sample", dev, args.offload), m("exact_sample"):
            lat_x = exact_pipe.sample(cond_x, seed=args.seed, steps=args.steps, guidance_scale=args.guidance)
        res["latent_rel_err_vs_exact"] = float((lat - lat_x).norm() / lat_x.norm())
        mode = args.exact
        if mode == "auto":
            mode = "full" if (dev.type == "cuda" or args.depth <= 6) else "estimate"
        with offload.stage(exact_pipe, "decode", dev, args.offload):
            if mode == "full":
                exact_meshes, _ = run_decode(exact_pipe, lat, args.depth, "progressive", m, "exact_decode")
                if dtype == torch.float32:
                    res["meshes"] = same_meshes(exact_meshes, fast_meshes)
            else:
                est = estimate_dense_decode(exact_pipe, lat, args.depth)
                # smoothing + marching cubes as in the fast path (same code, same grids)
                m.out["exact_decode"] = {"s": round(est + 0.0, 3), "estimated": True}
                a, _ = run_decode(exact_pipe, lat, args.compare_depth, "progressive", m, "compare_exact")
                b, _ = run_decode(exact_pipe, lat, args.compare_depth, DEFAULT_DECODER, m, "compare_fast", **kw)
                res["meshes_at_compare_depth"] = {"depth": args.compare_depth, **same_meshes(a, b)}
        if exact_pipe is pipe:  # the fast runs after this one use it again
            pipe.transformer.set_attention(mi_mode="grouped")
            if dtype != torch.float32:
                pipe.to(dtype=dtype)
    for _ in range(args.repeat - before):
        fast_path()
    totals = [round(sum(r[k]["s"] for k in fast_stages), 3) for r in runs]
    res["fast_runs_total_s"] = totals
    m.out.update(runs[sorted(range(len(runs)), key=totals.__getitem__)[(len(runs) - 1) // 2]])
    res["stages"] = m.out
    fast = sum(m.out[f"fast_{s}"]["s"] for s in ("encode", "sample", "decode"))
    res["fast_total_s"] = round(fast, 3)
    if "exact_decode" in m.out:
        exact = sum(m.out[f"exact_{s}"]["s"] for s in ("encode", "sample", "decode"))
        res["exact_total_s"] = round(exact, 3)
        res["speedup_total"] = round(exact / fast, 2)
        res["speedup_sample"] = round(m.out["exact_sample"]["s"] / m.out["fast_sample"]["s"], 2)
        res["speedup_decode"] = round(m.out["exact_decode"]["s"] / m.out["fast_decode"]["s"], 2)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
