"""Renders the before/after picture of docs/reroll.md from two CLI dumps (numpy z-buffer, no GL).

    python docs/make_reroll_figure.py run1.npz run2.npz docs/images/reroll_before_after.png --rerolled 2

The picture in the docs: ``python docs/make_reroll_figure.py --demo DIR docs/images/reroll_before_after.png``
records Realistic-Style/00 (5 objects, 256 px, 8 steps, seed 42) on the golden tiny checkpoint,
re-rolls object 2 with seed 7, and decodes both at octree depth 6 with the VAE field made
object-like as in ``bench.run`` (the tiny checkpoint's random VAE otherwise gives near-identical slabs).

One column per object (top: the recorded run, bottom: the re-roll), one camera per column; kept
objects grey, re-rolled ones orange. The label says whether the two meshes are identical.
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

KEPT, REROLLED = np.array([0.72, 0.74, 0.78]), np.array([0.95, 0.55, 0.2])


def camera(yaw_deg=35.0, pitch_deg=25.0) -> np.ndarray:
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return rx @ ry


def render(meshes, colours, size=320, rot=None, scale=None) -> np.ndarray:
    """Orthographic flat-shaded render of (vertices, faces) lists -> (size, size, 3) uint8."""
    rot = camera() if rot is None else rot
    img = np.ones((size, size, 3))
    depth = np.full((size, size), np.inf)
    light = np.array([0.3, 0.5, -0.8]) / np.linalg.norm([0.3, 0.5, -0.8])
    for (v, f), col in zip(meshes, colours):
        if len(f) == 0:
            continue
        p = v @ rot.T
        xy = (p[:, :2] * np.array([1, -1]) * scale + 1) * 0.5 * size  # y up on screen
        z = p[:, 2]
        tri = xy[f]
        n = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        shade = 0.35 + 0.65 * np.abs(n @ light)
        for t, (a, b, c) in enumerate(tri):
            x0, y0 = np.floor(np.minimum(np.minimum(a, b), c)).astype(int)
            x1, y1 = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size - 1), min(y1, size - 1)
            if x1 < x0 or y1 < y0:
                continue
            gx, gy = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
            det = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
            if abs(det) < 1e-12:
                continue
            w0 = ((b[1] - c[1]) * (gx - c[0]) + (c[0] - b[0]) * (gy - c[1])) / det
            w1 = ((c[1] - a[1]) * (gx - c[0]) + (a[0] - c[0]) * (gy - c[1])) / det
            w2 = 1 - w0 - w1
            inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            if not inside.any():
                continue
            zz = w0 * z[f[t, 0]] + w1 * z[f[t, 1]] + w2 * z[f[t, 2]]
            sub = depth[y0:y1 + 1, x0:x1 + 1]
            hit = inside & (zz < sub)
            sub[hit] = zz[hit]
            img[y0:y1 + 1, x0:x1 + 1][hit] = col * shade[t]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def load(path):
    z = np.load(path, allow_pickle=False)
    n = len([k for k in z.files if k.endswith("_faces") and k.startswith("mesh")])
    return [(z[f"mesh{i}_vertices"].astype(np.float64), z[f"mesh{i}_faces"]) for i in range(n)]


def demo(folder) -> tuple[str, str]:
    """-> two .npz files with mesh keys: the recorded run and the re-roll of object 2 (see the docstring)."""
    import sys
    from pathlib import Path

    from PIL import Image as PILImage

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from bench.run import make_bench_field
    from midi_model.inputs.labels import split_label_map
    from midi_model.pipeline import MIDIPipeline

    ex = root.parent / "shared" / "data" / "examples" / "Realistic-Style" / "00"
    rgb = np.asarray(PILImage.open(f"{ex}_rgb.png").convert("RGB").resize((256, 256), PILImage.BICUBIC))
    seg = np.asarray(PILImage.open(f"{ex}_seg.png").convert("L").resize((256, 256), PILImage.NEAREST))
    _, masks = split_label_map(seg, None)
    pipe = MIDIPipeline.from_pretrained(root.parent / "shared" / "golden" / "midi_tiny", dtype="fp32")
    cond = pipe.encode(rgb, masks)
    rec = pipe.sample_recorded(cond, seed=42, steps=8)
    make_bench_field(pipe.vae, rec.final)
    out = []
    for name, r in (("before", rec), ("after", pipe.resample(cond, rec, reroll=[1], seed=7))):
        arrays = {}
        for i, m in enumerate(pipe.decode(r.final, octree_depth=6)):
            arrays[f"mesh{i}_vertices"] = np.asarray(m.vertices, np.float32)
            arrays[f"mesh{i}_faces"] = np.asarray(m.faces, np.int64)
        out.append(str(Path(folder) / f"demo_{name}.npz"))
        np.savez(out[-1], **arrays)
    return out[0], out[1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", action="store_true", help="paths are DIR OUT: make the two runs in DIR first")
    ap.add_argument("paths", nargs="+", help="BEFORE.npz AFTER.npz OUT.png (with --demo: DIR OUT.png)")
    ap.add_argument("--rerolled", default="2", help="objects re-rolled (from 1), comma separated")
    ap.add_argument("--size", type=int, default=150, help="pixels per object panel")
    args = ap.parse_args(argv)
    redo = {int(s) - 1 for s in args.rerolled.split(",")}
    if args.demo:
        folder, args.out = args.paths
        b_path, a_path = demo(folder)
    else:
        b_path, a_path, args.out = args.paths
    before, after = load(b_path), load(a_path)
    rot = camera()
    size, pad = args.size, 22
    canvas = Image.new("RGB", (len(before) * size + 70, 2 * size + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for row, title in enumerate(["seed 42", f"--reroll\n{args.rerolled}\n--seed 7"]):
        draw.text((6, pad + row * size + size // 2 - 12), title, fill=(40, 40, 40))
    for k, (b, a) in enumerate(zip(before, after)):
        # one camera per object (column), shared by its before and after
        pts = np.concatenate([v for v, f in (b, a) if len(f)]) @ rot.T
        centre = (pts.min(0) + pts.max(0)) / 2
        scale = 0.85 / np.abs(pts[:, :2] - centre[:2]).max()
        col = REROLLED if k in redo else KEPT
        for row, (v, f) in enumerate((b, a)):
            img = render([(v - centre @ rot, f)], [col], size, rot, scale)
            canvas.paste(Image.fromarray(img), (70 + k * size, pad + row * size))
        same = b[0].shape == a[0].shape and np.array_equal(b[0], a[0]) and np.array_equal(b[1], a[1])
        label = f"object {k + 1}: " + ("identical" if same else "re-rolled")
        draw.text((70 + k * size + 8, 5), label, fill=(40, 40, 40))
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
