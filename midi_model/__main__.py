"""Headless main job: ``python -m midi_model generate ...``, ``... texture ...`` and ``... download ...``.

Every setting and input is checked (``cli_checks``) before the model is loaded; a user mistake
ends in one line ``error: ...`` and exit code 2 (``--debug`` shows the traceback), out of memory
in exit code 3, Ctrl-C in 130. Outputs are written whole or not at all (``files``).

From any folder, run the package by its path: ``python ComfyUI/custom_nodes/ComfyUI-MIDI/midi_model download ...``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__" and not __package__:
    # run by path: Python put this package's own folder first on sys.path (so its modules would be
    # top-level names); put the folder that holds the package there instead and run the package's CLI
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from midi_model.__main__ import main as _main
    sys.exit(_main())

import numpy as np  # noqa: E402

from .errors import MIDIError  # noqa: E402

EXIT_USER, EXIT_OOM, EXIT_INTERRUPT, EXIT_BUG = 2, 3, 130, 1


def _common(top: bool = False) -> argparse.ArgumentParser:
    """Options every sub-command takes (pass as ``parents=[_common()]``); before or after the command."""
    c = argparse.ArgumentParser(add_help=False)
    # SUPPRESS in the sub-commands, so they do not reset a --debug given before the command
    c.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="show the full traceback of an error")
    return c


def _parser() -> argparse.ArgumentParser:
    from . import cli_checks as chk
    from . import inputs
    from .attention import ATTENTION_BACKENDS
    from .dtypes import DTYPE_CHOICES
    from .meshing import DECODERS, DEFAULT_DECODER

    ap = argparse.ArgumentParser(prog="python -m midi_model", description="MIDI: one image -> 3D scene",
                                 parents=[_common(top=True)])
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="image + instance masks -> scene GLB", parents=[_common()])
    g.add_argument("--model", required=True, help="model folder in the VAST-AI/MIDI-3D layout")
    g.add_argument("--image", required=True, help="scene RGB image (EXIF orientation applied; transparent = white)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--seg", help="label map: every grey level (after 'L' conversion) is one instance; "
                                   "16-bit maps keep their integer labels")
    src.add_argument("--masks", nargs="+", help="one mask image per instance (white or any colour on black, "
                                                "or the opaque part of a transparent PNG), in order")
    g.add_argument("--out", required=True, help="output .glb (never overwritten)")
    g.add_argument("--seed", type=chk.arg(inputs.check_seed), default=42, help="0..2^64-1")
    g.add_argument("--steps", type=chk.arg(inputs.check_steps), default=None,
                   help=f"denoising steps, 1..{inputs.STEPS_MAX} (50; with --keep-from: the recorded ones)")
    g.add_argument("--guidance", type=chk.arg(inputs.check_guidance), default=None,
                   help=f"CFG scale, 0..{inputs.GUIDANCE_MAX:g}, 1 or less = no CFG "
                        f"(7.0; with --keep-from: the recorded one)")
    g.add_argument("--octree-depth", type=chk.arg(inputs.check_octree_depth), default=8,
                   help=f"grid 2^d+1 per axis, {inputs.OCTREE_DEPTH_MIN}..{inputs.OCTREE_DEPTH_MAX} (8 = 257^3)")
    g.add_argument("--decoder", default=DEFAULT_DECODER, choices=DECODERS,
                   help=f"default {DEFAULT_DECODER}. progressive / dense: the official decoders; *hierarchical: "
                        "their coarse-to-fine twins (same meshes from a few %% of the queries)")
    g.add_argument("--no-smoothing", action="store_true", help="skip the 3x3x3 box smoothing")
    g.add_argument("--image-padding", action="store_true", help="the official do_image_padding")
    g.add_argument("--max-instances", type=chk.at_least_one, default=None,
                   help="keep the first N instances (official order); without it more than "
                        f"{inputs.TRAINED_MAX_INSTANCES} is an error")
    g.add_argument("--allow-more-instances", action="store_true",
                   help=f"allow more than {inputs.TRAINED_MAX_INSTANCES} instances (quality may drop)")
    g.add_argument("--size", type=chk.positive_size, default=None,
                   help="resize image (bicubic) and seg/masks (nearest) so the longer side is S, aspect kept")
    g.add_argument("--device", default="cuda" if _cuda() else "cpu")
    g.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    g.add_argument("--attention", default="sdpa", choices=ATTENTION_BACKENDS)
    g.add_argument("--query-points", help=".npy of (P,3) or (n,P,3) points: dump the VAE values there (needs --dump)")
    g.add_argument("--dump", help="write (never overwrite) the run to this .npz: inputs, embeddings, every object's trajectory "
                                  "(objects x (steps+1) x tokens x channels float32), meshes; --keep-from reads it")
    g.add_argument("--dump-internals", action="store_true",
                   help="with --dump, also every intermediate array (per-step CFG batch, transformer internals at "
                        "step 0, decode grids), as the golden reference has them; large")
    r = g.add_argument_group("per-object control (with --keep-from)")
    r.add_argument("--keep-from", metavar="DUMP", help="a --dump of an earlier run on the same inputs: its objects "
                                                      "are kept exactly, except those named by --reroll/--remove")
    r.add_argument("--reroll", metavar="K[,K]", help="objects to sample again (numbered from 1 in instance order, or "
                                                     "named: seg_29 / mask_2 as in the scene), next to the kept "
                                                     "ones, with --seed")
    r.add_argument("--remove", metavar="K[,K]", help="objects to drop from the scene (numbers or names); the others "
                                                     "stay as recorded")
    r.add_argument("--add", action="store_true", help="sample objects that are not in the recording (extra masks or "
                                                      "seg labels) next to the kept ones")
    g.add_argument("--object-seed", action="append", default=[], metavar="K=SEED",
                   help="object K (from 1) draws its noise from its own SEED, whatever the object count "
                        "(repeatable; default: every object's slice of the official --seed draw)")

    g.add_argument("--texture", action="store_true",
                   help="also fit the photo's camera to the masks and texture the objects from the image")
    _texture_options(g)

    t = sub.add_parser("texture", help="scene GLB + image + masks -> camera from the masks, textured scene GLB",
                       parents=[_common()])
    t.add_argument("--scene", required=True, help="scene GLB (e.g. from generate); its i-th mesh node goes with "
                                                  "the i-th mask")
    t.add_argument("--image", required=True, help="the scene's RGB image")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--seg", help="label map: ascending grey levels are objects 0, 1, ... of the scene")
    src.add_argument("--masks", nargs="+", help="one mask image per object (white = object), in node order")
    t.add_argument("--out", required=True, help="output textured .glb (never overwritten)")
    t.add_argument("--camera", help="camera.json to use instead of fitting one")
    _texture_options(t)

    d = sub.add_parser("download", help="download VAST-AI/MIDI-3D (needs internet)", parents=[_common()])
    d.add_argument("--out", required=True)
    d.add_argument("--repo", default="VAST-AI/MIDI-3D")
    return ap


def _texture_options(p):
    from . import cli_checks as chk

    p.add_argument("--camera-out", help="write the fitted camera here (JSON: width, height, K, world_to_camera "
                                        "with OpenCV axes; world = the scene's mesh frame)")
    p.add_argument("--overlay-out", help="write the camera check picture here (PNG: projected silhouettes "
                                         "tinted, mask outlines, IoU per object)")
    p.add_argument("--texture-size", type=chk.positive_size, default=1024, help="texture side per object in texels")
    p.add_argument("--frame", default="midi", choices=["midi", "camera"],
                   help="midi: MIDI's scene frame (default); camera: camera at the origin, Y up, -Z forward (OpenGL)")
    p.add_argument("--vertex-colors", action="store_true", help="vertex colours instead of a texture")
    p.add_argument("--edge-margin", type=int, default=1, choices=range(0, 17), metavar="0..16",
                   help="pixels at each mask's edge not trusted for colour (segmentation edges mix colours)")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def validate_generate(args):
    """Everything that needs no model, before the model: -> (SceneInputs, query points or None)."""
    from . import cli_checks as chk

    chk.check_device(args.device)
    chk.check_dtype_fits(args.dtype, args.device)
    chk.check_outputs(args.out, args.dump, args.query_points)
    check_texture_outputs(args)
    scene = chk.load_scene_inputs(args.image, seg=args.seg, masks=args.masks, size=args.size,
                                  max_instances=args.max_instances, allow_more_instances=args.allow_more_instances)
    pts = chk.load_query_points(args.query_points, len(scene.ids)) if args.query_points else None
    chk.check_model_folder(args.model)
    return scene, pts


def check_texture_outputs(args):
    from .files import check_new_file

    if args.camera_out:
        check_new_file(args.camera_out, "--camera-out", ".json")
    if args.overlay_out:
        check_new_file(args.overlay_out, "--overlay-out", ".png")


def texture_outputs(args, names, meshes, rgb, masks, camera=None):
    """Fit (or take) the camera and texture the objects -> (GLB bytes, [(path, writer, what)] of the extras)."""
    import io

    from PIL import Image

    from .scene import scene_bytes
    from .texturing import camera_overlay, frame_transform, texture_scene, textured_scene

    if len(masks) != len(meshes):
        raise MIDIError(f"{len(masks)} masks for {len(meshes)} objects in the scene: give one mask per mesh "
                        "node, in node order")
    t0 = time.time()
    result = texture_scene(meshes, rgb, masks, camera=camera, texture_size=args.texture_size,
                           edge_margin=args.edge_margin, callback=_progress("texturing"))
    cam = result.fit.camera
    print("camera: focal %.1f px, IoU per object %s (%.1fs)" % (
        cam.K[0, 0], [round(x, 3) for x in result.fit.iou], time.time() - t0), file=sys.stderr)
    data = scene_bytes(textured_scene(result.objects, names, frame_transform(args.frame, cam), args.vertex_colors))
    extras = []
    if args.camera_out:
        extras.append((args.camera_out, cam.dumps().encode(), "--camera-out"))
    if args.overlay_out:
        over = camera_overlay(rgb, cam, [m.vertices for m in meshes], [m.faces for m in meshes], masks,
                              result.fit.iou)
        buf = io.BytesIO()
        Image.fromarray(over).save(buf, format="PNG")
        extras.append((args.overlay_out, buf.getvalue(), "--overlay-out"))
    return data, extras


def texture(args) -> int:
    import json

    from . import cli_checks as chk
    from .files import remove_written, write_new_bytes
    from .scene import load_scene_meshes
    from .texturing import Camera

    chk.check_outputs(args.out)
    check_texture_outputs(args)
    camera = None
    if args.camera:
        try:
            with open(args.camera) as f:
                camera = Camera.from_dict(json.load(f), f"--camera {args.camera}")
        except (OSError, ValueError) as e:
            raise MIDIError(f"--camera {args.camera}: cannot read it ({e})") from None
    names, meshes = load_scene_meshes(args.scene)
    scene = chk.load_scene_inputs(args.image, seg=args.seg, masks=args.masks, allow_more_instances=True)
    data, extras = texture_outputs(args, names, meshes, scene.rgb, scene.masks, camera)
    written = [write_new_bytes(args.out, data, "--out")]
    try:
        for path, blob, what in extras:
            written.append(write_new_bytes(path, blob, what))
    except BaseException:
        remove_written(written)
        raise
    print(f"wrote {args.out} ({len(meshes)} textured objects, frame {args.frame})", file=sys.stderr)
    return 0


def _progress(label: str):
    start = time.time()
    last = [None]

    def cb(done, total):  # the library's progress: callback(done, total)
        if (done, total) == last[0]:  # the decoder may report a chunk that did not move the bar
            return
        last[0] = (done, total)
        sys.stderr.write(f"\r{label}: {done}/{total} ({time.time() - start:.1f}s)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return cb


def _object_seeds(args, n: int) -> dict:
    out = {}
    for item in args.object_seed:
        k, _, seed = item.partition("=")
        if not (k.strip().isdigit() and seed.strip().lstrip("-").isdigit()):
            raise MIDIError(f"--object-seed {item}: write K=SEED, e.g. 2=7")
        if not 1 <= int(k) <= n:
            raise MIDIError(f"--object-seed {item}: objects are numbered from 1 to {n}")
        out[int(k) - 1] = int(seed)
    return out


def _recorded_meshes(path, recording):
    """The meshes stored in a --dump, one per recorded object (None where absent)."""
    import trimesh

    with np.load(path, allow_pickle=False) as z:
        out = []
        for j in range(recording.num_instances):
            v, f = f"mesh{j}_vertices", f"mesh{j}_faces"
            out.append(trimesh.Trimesh(z[v], z[f], process=False) if v in z.files and f in z.files else None)
    return out


def generate(args) -> int:
    import torch

    from . import trajectory as traj
    from .mesh_cache import MeshCache, mesh_key
    from .files import remove_written, write_new, write_new_bytes
    from .pipeline import MIDIPipeline, decode_settings
    from .scene import glb_bytes, instance_names, numbered_labels

    if not args.keep_from and (args.reroll or args.remove or args.add):
        raise MIDIError("--reroll, --remove and --add change a recorded run: give it with --keep-from DUMP")
    recording = traj.Recording.load(args.keep_from) if args.keep_from else None
    scene, query_points = validate_generate(args)
    rgb, masks, ids, seg = scene.rgb, scene.masks, scene.ids, scene.seg
    n_in = len(masks)
    kind = "seg" if seg is not None else "mask"  # the objects' labels: "seg 29" or "mask 2", as Segment Scene's
    labels = numbered_labels(kind, ids)
    if recording is not None:
        reroll = traj.parse_objects(args.reroll, n_in, labels, what="--reroll")
        remove = traj.parse_objects(args.remove, n_in, labels, what="--remove")
        object_seeds = _object_seeds(args, n_in - len(remove))
    else:
        object_seeds = _object_seeds(args, n_in)
    t0 = time.time()
    pipe = MIDIPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                        attention_backend=args.attention)
    print(f"loaded {args.model} ({pipe.dtype}, {args.device}) in {time.time() - t0:.1f}s", file=sys.stderr)
    record = {} if (args.dump and args.dump_internals) else None
    cond = pipe.encode(rgb, masks, image_padding=args.image_padding)
    print(f"{cond.num_instances} instances (ids {list(map(int, ids))})", file=sys.stderr)
    if recording is None:
        rec = pipe.sample_recorded(cond, seed=args.seed, steps=50 if args.steps is None else args.steps,
                                   guidance_scale=7.0 if args.guidance is None else args.guidance,
                                   callback=_progress("sampling"), record=record, object_seeds=object_seeds)
    else:
        rec = pipe.resample(cond, recording, reroll, args.seed, remove, allow_new=args.add, steps=args.steps,
                            guidance_scale=args.guidance, callback=_progress("sampling"), record=record,
                            object_seeds=object_seeds)
        cond, ids = traj.select_objects(cond, rec.inputs), np.asarray(ids)[rec.inputs]
        kept = [f"{k + 1}<-{s + 1}" for k, s in enumerate(rec.sources) if s is not None]
        print(f"kept (object<-recorded): {', '.join(kept) or 'none'}; sampled: "
              f"{[k + 1 for k, s in enumerate(rec.sources) if s is None] or 'none'}", file=sys.stderr)
    lat = rec.final
    dec = decode_settings(args.octree_depth, args.decoder, not args.no_smoothing)
    rec.decode = dec
    cache = MeshCache(max_bytes=1 << 62)
    if recording is not None and recording.decode == dec:
        for j, m in enumerate(_recorded_meshes(args.keep_from, recording)):
            if m is not None:
                cache.put(pipe.vae, mesh_key(recording.final[j], dec), m)
    if record is not None:  # the internals come from one full decode
        meshes, reused = pipe.decode(lat, octree_depth=args.octree_depth, decoder=args.decoder,
                                     smoothing=not args.no_smoothing, callback=_progress("decoding"),
                                     record=record), 0
    else:
        meshes, reused = pipe.decode_reusing(lat, cache, octree_depth=args.octree_depth, decoder=args.decoder,
                                             smoothing=not args.no_smoothing, callback=_progress("decoding"))
    if reused:
        print(f"reused the recorded meshes of {reused} kept object(s)", file=sys.stderr)
    names = instance_names(len(ids), numbered_labels(kind, ids))  # ids of the objects kept after a re-roll
    extras = []
    if args.texture:  # empty objects (nothing above the iso level) cannot be placed or textured
        keep = [i for i, m in enumerate(meshes) if len(m.faces) > 0]
        if len(keep) < len(meshes):
            print(f"not textured (empty): {[names[i] for i in range(len(meshes)) if i not in keep]}",
                  file=sys.stderr)
        obj_masks = np.asarray(masks)[rec.inputs] if recording is not None else np.asarray(masks)
        data, extras = texture_outputs(args, [names[i] for i in keep], [meshes[i] for i in keep], rgb,
                                       obj_masks[keep])
    else:
        data = glb_bytes(meshes, names)
    arrays = None
    if args.dump:
        arrays = {
            "inputs_rgb": rgb, "instance_ids": np.asarray(ids, np.int64),
            "instance_rgb": cond.instance_rgb, "instance_mask": cond.instance_mask,
            "scene_rgb": np.repeat(cond.scene_rgb[None], cond.num_instances, 0),
            "clip_pixel_values": cond.extras["clip_pixel_values"],
            "dino_pixel_values": cond.extras["dino_pixel_values"],
            "image_embeds_1": cond.image_embeds_1, "image_embeds_2": cond.image_embeds_2,
            "initial_noise": rec.latents[0], "final_latents": lat,
        }
        if seg is not None:
            arrays["inputs_seg"] = seg
        if query_points is not None:
            pts = torch.from_numpy(query_points)
            if pts.dim() == 2:
                pts = pts[None].expand(lat.shape[0], -1, -1)
            p = next(pipe.vae.parameters())
            with torch.no_grad():
                vals = pipe.vae.decode(lat.to(p.device, p.dtype), pts.to(p.device, p.dtype))
            arrays["vae_query_points"], arrays["vae_query_values"] = pts, vals
        arrays.update(record or {})
        for i, m in enumerate(meshes):
            arrays[f"mesh{i}_vertices"] = np.asarray(m.vertices, np.float32)
            arrays[f"mesh{i}_faces"] = np.asarray(m.faces, np.int64)
        arrays.update(rec.to_arrays())
        arrays = {k: _np(v) for k, v in arrays.items()}
    # all or nothing: a failed dump takes the scene back, so a re-run is not blocked
    written = [write_new_bytes(args.out, data, "--out")]
    try:
        for path, blob, what in extras:
            written.append(write_new_bytes(path, blob, what))
        if arrays is not None:
            written.append(write_new(args.dump, lambda f: np.savez(f, **arrays), "--dump"))
    except BaseException:
        remove_written(written)
        raise
    print(f"wrote {args.out}: {len(meshes)} meshes, "
          f"{sum(len(m.faces) for m in meshes)} faces in {time.time() - t0:.1f}s", file=sys.stderr)
    if arrays is not None:
        print(f"wrote {args.dump}: {len(arrays)} arrays", file=sys.stderr)
    return 0


def _np(v):
    import torch

    if torch.is_tensor(v):
        v = v.detach().cpu()
        return (v.float() if v.is_floating_point() else v).numpy()
    return np.asarray(v)


def run(args) -> int:
    if args.command == "download":
        from .hub import download_model

        print(download_model(args.out, args.repo))
        return 0
    if args.command == "texture":
        return texture(args)
    return generate(args)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.debug:
        return run(args)
    from .errors import MIDIOutOfMemoryError

    try:
        return run(args)
    except MIDIOutOfMemoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_OOM
    except MIDIError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written", file=sys.stderr)
        return EXIT_INTERRUPT
    except Exception as e:  # a bug, not a user mistake: still one line, the traceback on request
        print(f"error: unexpected {type(e).__name__}: {e} (run again with --debug for the traceback, "
              f"and please report it)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
