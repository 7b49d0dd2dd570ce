"""Latents -> meshes: the official dense / progressive grid decode, box smoothing,
marching cubes and vertex transform."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BBOX_MIN = np.array([-1.005, -1.005, -1.005])
BBOX_MAX = np.array([1.005, 1.005, 1.005])
BOX_PADDING = 0.05
DECODERS = ("progressive", "dense")


def grid_points(bbox_min, bbox_max, depth: int) -> tuple[np.ndarray, list, np.ndarray]:
    """(2^d+1)^3 points over the box, float32, "ij" order (x slowest, z fastest).

    -> (points (P,3), grid_size [g,g,g], bbox_size)."""
    g = 2 ** depth + 1
    axes = [np.linspace(bbox_min[i], bbox_max[i], g, dtype=np.float32) for i in range(3)]
    xyz = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return xyz, [g, g, g], bbox_max - bbox_min


@torch.no_grad()
def query_field(vae, latents: torch.Tensor, points: torch.Tensor, chunk: int, callback=None) -> torch.Tensor:
    """latents (n,T,C), points (n,P,3) -> (n,P) float32 on CPU, decoded where the VAE sits."""
    p = next(vae.parameters())
    lat = latents.to(p.device, p.dtype)
    pts = points.to(p.device, p.dtype)  # official: query coords in the latent dtype
    return vae.decode(lat, pts, chunk=chunk, callback=callback)[..., 0].float().cpu()


def occupied_box(values: torch.Tensor, points: torch.Tensor, padding: float = BOX_PADDING):
    """Box of the points with value <= 0, padded; None when there are none."""
    occ = points[values <= 0]
    if occ.shape[0] == 0:
        return None
    lo = (occ.min(dim=0).values - padding).float().cpu().numpy()
    hi = (occ.max(dim=0).values + padding).float().cpu().numpy()
    return lo, hi


@torch.no_grad()
def decode_grids(vae, latents: torch.Tensor, depth: int = 8, decoder: str = "progressive",
                 chunk: int = 50_000, callback=None, record=None):
    """-> list of (grid (g,g,g) float32 tensor, bbox_min, bbox_size), one per instance.

    progressive (the official scripts): decode the default box, take the box of the
    points with value <= 0 plus 0.05, decode again over it. An instance with no such
    point reuses the previous instance's box (the official loop's behaviour).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: use one of {DECODERS}")
    n = latents.shape[0]
    pts, gsize, bsize = grid_points(BBOX_MIN, BBOX_MAX, depth)
    pts_t = torch.from_numpy(pts)
    passes = 2 if decoder == "progressive" else 1
    step = _progress(callback, passes)
    dense = query_field(vae, latents, pts_t.unsqueeze(0).expand(n, -1, -1), chunk, step(0))
    if record is not None:
        record["dense_grid"] = dense.view(n, *gsize)
    if decoder == "dense":
        return [(dense[i].view(*gsize), BBOX_MIN, bsize) for i in range(n)]
    lo, hi = BBOX_MIN, BBOX_MAX
    pts_q = pts_t.to(next(vae.parameters()).dtype).float()  # the points the VAE actually saw
    boxes, prog_pts = [], []
    for i in range(n):
        box = occupied_box(dense[i], pts_q)
        if box is not None:
            lo, hi = box
        p_i, _, size_i = grid_points(lo, hi, depth)
        boxes.append((lo, hi, size_i))
        prog_pts.append(torch.from_numpy(p_i))
    prog = query_field(vae, latents, torch.stack(prog_pts), chunk, step(1))
    if record is not None:
        record["prog_grid"] = prog.view(n, *gsize)
        record["prog_bbox_min"] = np.stack([np.asarray(b[0], np.float32) for b in boxes])
        record["prog_bbox_max"] = np.stack([np.asarray(b[1], np.float32) for b in boxes])
    return [(prog[i].view(*gsize), boxes[i][0], boxes[i][2]) for i in range(n)]


def _progress(callback, passes: int):
    """Spread per-chunk progress of several passes over one 0..1 range."""
    def for_pass(k):
        if callback is None:
            return None
        return lambda done, total: callback(k * total + done, passes * total)
    return for_pass


def box_smooth(grid: torch.Tensor) -> torch.Tensor:
    """The official "gaussian, sigma=1" smoothing: in fact a 3x3x3 mean filter, zero padded."""
    k = torch.full((1, 1, 3, 3, 3), 1.0 / 27.0, dtype=grid.dtype, device=grid.device)
    return F.conv3d(grid[None, None], k, padding=1)[0, 0]


def marching_cubes(grid: np.ndarray, bbox_min, bbox_size, level: float = 0.0):
    """skimage Lewiner at the level, then the official transform v / g * size + min
    (dividing by g = 2^d+1, not 2^d: a 0.39 % shrink kept for parity)."""
    from skimage import measure

    if not (grid.min() <= level <= grid.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    verts, faces, _, _ = measure.marching_cubes(grid, level, method="lewiner")
    verts = verts / np.array(grid.shape) * bbox_size + bbox_min
    return verts.astype(np.float32), np.ascontiguousarray(faces).astype(np.int64)


def grids_to_meshes(grids, smoothing: bool = True, record=None):
    """[(grid, bbox_min, bbox_size)] -> list of trimesh.Trimesh (empty mesh if no surface)."""
    import trimesh

    meshes = []
    for i, (grid, lo, size) in enumerate(grids):
        g = box_smooth(grid.float()) if smoothing else grid.float()
        if record is not None:
            record.setdefault("_smoothed", []).append(g)
        v, f = marching_cubes(g.cpu().numpy(), lo, size)
        if record is not None:
            record[f"mesh{i}_vertices"], record[f"mesh{i}_faces"] = v, f
        meshes.append(trimesh.Trimesh(v, f, process=False))
    if record is not None and "_smoothed" in record:
        record["smoothed_grid"] = torch.stack(record.pop("_smoothed"))
    return meshes
