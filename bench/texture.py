"""Texture stage benchmark: rasteriser, camera fit and photo texture time on a synthetic scene.

    python -m bench.texture --faces 50000 --size 1024 --texture-size 1024 --device cpu

The scene is midi_model.texturing.synthetic's (box, sphere, capsule; known camera and colours),
with each primitive subdivided to about ``--faces`` triangles. Prints one JSON object:
- raster: seconds for one render of all objects at size^2 (face id, barycentrics, depth, normals),
  and the same pixels through trimesh ray casting (the reference path; embree when installed),
  with the fraction of pixels whose object agrees;
- camera_fit: seconds, IoU per object, and the per-object time (seconds / objects);
- texture: seconds for UV unwrap + photo bake + fill of all objects, and per object;
  ("seconds" is wall-clock time, "cpu_seconds" the process's CPU time: on a shared machine the
  second is the steadier figure);
- colour error of the baked visible texels against the exact surface colours (true camera).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def dense_primitives(faces: int):
    """Box, sphere and capsule of about ``faces`` triangles each, placed as in the synthetic scene."""
    import trimesh

    box = trimesh.creation.box(extents=(1.2, 0.5, 0.8))
    while len(box.faces) * 4 <= faces:
        box = box.subdivide()
    box.apply_translation((-0.2, -0.45, 0.1))
    n = max(8, int(round(np.sqrt(faces / 4))))         # uv_sphere / capsule: about 4 n^2 triangles
    sphere = trimesh.creation.uv_sphere(radius=0.45, count=[n, n])
    sphere.apply_translation((0.3, 0.15, -0.35))
    cap = trimesh.creation.capsule(height=0.4, radius=0.25, count=[int(n * 1.41), int(n * 1.41)])
    cap.apply_translation((0.6, -0.25, 0.55))
    return [box, sphere, cap]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.texture")
    ap.add_argument("--faces", type=int, default=50000, help="triangles per object (about)")
    ap.add_argument("--size", type=int, default=1024, help="photo side in pixels")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--device", default="cpu", help="rasteriser device for the raster timing (cpu or cuda)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-reference", action="store_true", help="skip the trimesh ray-casting reference")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from midi_model.texturing import fit_camera, texture_from_image
    from midi_model.texturing.bake import texels
    from midi_model.texturing.raster import rasterize
    from midi_model.texturing.synthetic import make_scene, surface_colour

    meshes = dense_primitives(args.faces)
    scene = make_scene(args.size, args.size, meshes=meshes)
    V = [m.vertices for m in meshes]
    F = [m.faces for m in meshes]
    cam = scene.camera
    out = {"objects": len(meshes), "faces": [len(f) for f in F], "size": args.size,
           "texture_size": args.texture_size, "threads": torch.get_num_threads()}

    dev = torch.device(args.device)
    Vd = [torch.tensor(v, dtype=torch.float32, device=dev) for v in V]
    rasterize(Vd, F, cam.K, cam.world_to_camera, 64, 64, device=dev)            # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    r = rasterize(Vd, F, cam.K, cam.world_to_camera, args.size, args.size, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out["raster"] = {"device": args.device, "seconds": round(time.perf_counter() - t, 3),
                     "cpu_seconds": round(time.process_time() - c, 3),
                     "covered_pixels": int(r.mask.sum())}
    if not args.no_reference:
        import trimesh

        both = trimesh.util.concatenate(meshes)
        owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(F)])
        v, u = np.mgrid[0:args.size, 0:args.size] + 0.5
        d = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u)], -1)
        d = d.reshape(-1, 3) @ cam.R
        t = time.perf_counter()
        _, ray, tri = both.ray.intersects_location(np.repeat(cam.center[None], len(d), 0), d, multiple_hits=False)
        ref_s = time.perf_counter() - t
        obj = np.full(args.size * args.size, -1)
        obj[ray] = owner[tri]
        out["raster"].update(reference="trimesh ray casting (%s)" % type(both.ray).__module__.split(".")[-1],
                             reference_seconds=round(ref_s, 3),
                             speedup=round(ref_s / max(out["raster"]["seconds"], 1e-9), 2),
                             object_agreement=float((r.obj.cpu().numpy().reshape(-1) == obj).mean()))

    t, c = time.perf_counter(), time.process_time()
    fit = fit_camera(V, F, scene.masks)
    s, cs = time.perf_counter() - t, time.process_time() - c
    out["camera_fit"] = {"seconds": round(s, 2), "cpu_seconds": round(cs, 2), "per_object": round(s / len(meshes), 2),
                         "iou": [round(x, 4) for x in fit.iou], "starts": fit.starts}

    t, c = time.perf_counter(), time.process_time()
    objs = texture_from_image(V, F, scene.image, scene.masks, fit.camera, args.texture_size)
    s, cs = time.perf_counter() - t, time.process_time() - c
    out["texture"] = {"seconds": round(s, 2), "cpu_seconds": round(cs, 2), "per_object": round(s / len(meshes), 2)}
    out["total_seconds"] = round(out["camera_fit"]["seconds"] + out["texture"]["seconds"], 2)
    out["total_cpu_seconds"] = round(out["camera_fit"]["cpu_seconds"] + out["texture"]["cpu_seconds"], 2)

    # accuracy of the bake (true camera, so only the bake is measured)
    objs = texture_from_image(V, F, scene.image, scene.masks, cam, args.texture_size)
    err = []
    for i, o in enumerate(objs):
        pos = texels(o.mesh, args.texture_size).position.numpy()[o.seen]
        err.append(round(float(np.abs(o.texture[o.seen].astype(np.float64) - surface_colour(pos, i) * 255).mean()), 3))
    out["bake_mean_abs_error_255"] = err
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
