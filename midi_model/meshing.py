"""Latents -> meshes: the official dense / progressive grid decode, box smoothing,
marching cubes and vertex transform."""
from __future__ import annotations

import numpy as np
import torch

from .cpu_streams import even_bounds, map_blocks, stream_count
from .hierarchical import straddling_cells

BBOX_MIN = np.array([-1.005, -1.005, -1.005])
BBOX_MAX = np.array([1.005, 1.005, 1.005])
BOX_PADDING = 0.05
DECODERS = ("progressive", "dense", "progressive-hierarchical", "hierarchical")
# coarse-to-fine twins of the official decoders: same grids where the mesh reads them
HIERARCHICAL = {"hierarchical": "dense", "progressive-hierarchical": "progressive"}
# The one default decoder: library, CLI, nodes and shipped workflows all read this.
# The coarse-to-fine twin of the official progressive decoder: same meshes, a few % of the queries.
DEFAULT_DECODER = "progressive-hierarchical"


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
def decode_grids(vae, latents: torch.Tensor, depth: int = 8, decoder: str = DEFAULT_DECODER,
                 chunk: int = 50_000, callback=None, record=None, smoothing: bool = True,
                 coarse_depth: int | None = None, band: int | None = None, margin: float | None = None):
    """-> list of (grid (g,g,g) float32 tensor, bbox_min, bbox_size), one per instance.

    progressive (the official scripts): decode the default box, take the box of the
    points with value <= 0 plus 0.05, decode again over it. An instance with no such
    point reuses the previous instance's box (the official loop's behaviour).
    hierarchical / progressive-hierarchical: the same grids evaluated coarse-to-fine
    (``hierarchical.py``): exact where the (smoothed, if ``smoothing``) marching cubes
    reads them, the right sign elsewhere; ``coarse_depth`` and ``band`` tune it.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: use one of {DECODERS}")
    if decoder in HIERARCHICAL:
        return _decode_hierarchical(vae, latents, depth, HIERARCHICAL[decoder], chunk, callback, record,
                                    smoothing, coarse_depth, band, margin)
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


# The coarse-to-fine decoders query the VAE on the CPU in blocks of this many points: a block's
# activations stay in cache (about 2x faster per point than the official 50,000 with the small
# VAEs measured in docs/benchmarks.md; the values do not depend on the block, bit for bit).
CPU_QUERY_BLOCK = 4096
# Matrix kernels compute the rows that do not fill a whole tile (4 rows here) with other code
# and round them differently (a few ulp). The official chunks, 50,000 points, fill whole tiles
# of up to 16 rows, so every query is padded to a multiple of 16 points to round alike.
QUERY_ROW_MULTIPLE = 16


def _field_queries(vae, latents: torch.Tensor, chunk: int):
    """One ``query(points (P,3)) -> (P,)`` per instance, sharing one latent context
    (the decoder's self-attention stack runs once for all instances, as in vae.decode).
    ``chunk``: whole tiles (``whole_tiles``), so a padded block never exceeds it."""
    p = next(vae.parameters())
    context = vae.latent_context(latents.to(p.device, p.dtype))
    # on the CPU the blocks run in single-threaded streams (cpu_streams: no waits between threads)
    streams = stream_count() if p.device.type == "cpu" else 1
    if p.device.type == "cpu":
        chunk = min(chunk, CPU_QUERY_BLOCK)

    def make(i):
        ctx = context[i:i + 1]
        with torch.no_grad():
            keys = vae.query_keys(ctx)  # once per instance, not once per block

        def query(points: torch.Tensor) -> torch.Tensor:
            pts = points.to(p.device, p.dtype)[None]
            blocks = [pts[:, a:b] for a, b in even_bounds(pts.shape[1], chunk, streams, QUERY_ROW_MULTIPLE)]
            out = map_blocks(lambda b: _tiled_query(vae, ctx, b, keys), blocks, streams)
            return torch.cat(out, dim=1)[0, :, 0].float()
        return query
    return [make(i) for i in range(latents.shape[0])]


def whole_tiles(chunk: int) -> int:
    """A chunk size rounded down to whole tiles: padding a block never makes it larger."""
    return max(QUERY_ROW_MULTIPLE, chunk - chunk % QUERY_ROW_MULTIPLE)


def _tiled_query(vae, context: torch.Tensor, pts: torch.Tensor, keys=None) -> torch.Tensor:
    """vae.query on pts (1,n,3) padded with copies of the last point to whole tiles
    (``keys``: the context's ``vae.query_keys``, computed once for many blocks)."""
    n = pts.shape[1]
    pad = -n % QUERY_ROW_MULTIPLE
    if pad:
        pts = torch.cat([pts, pts[:, -1:].expand(-1, pad, -1)], dim=1)
    return vae.query(context, pts, keys)[:, :n]


def _decode_hierarchical(vae, latents, depth, official, chunk, callback, record, smoothing,
                         coarse_depth, band, margin):
    from . import hierarchical as hi

    coarse_depth = hi.DEFAULT_COARSE_DEPTH if coarse_depth is None else int(coarse_depth)
    band = hi.DEFAULT_BAND if band is None else int(band)
    margin = hi.DEFAULT_MARGIN if margin is None else float(margin)
    n = latents.shape[0]
    dev = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    chunk = whole_tiles(chunk)  # the refinement's chunks are then whole query blocks: one VAE call each
    queries = _field_queries(vae, latents, chunk)
    g = 2 ** depth + 1
    axes = [np.linspace(BBOX_MIN[i], BBOX_MAX[i], g, dtype=np.float32) for i in range(3)]
    stats, out = [], []
    lo, hi_ = BBOX_MIN, BBOX_MAX
    passes = 2 if official == "progressive" else 1
    segment = _segment_progress(callback, n * passes)
    for i in range(n):
        st = {}
        if official == "progressive":
            ext, st["box_pass"] = hi.occupied_extent(queries[i], BBOX_MIN, BBOX_MAX, depth, coarse_depth, band,
                                                     device=dev, chunk=chunk, margin=margin,
                                                     progress=segment(i * passes))
            if ext is not None:
                # the box of the points as the VAE saw them (coordinates in its dtype), as occupied_box
                a, b = ext
                pmin = torch.tensor([axes[k][a[k]] for k in range(3)]).to(dtype).float()
                pmax = torch.tensor([axes[k][b[k]] for k in range(3)]).to(dtype).float()
                lo = (pmin - BOX_PADDING).float().numpy()
                hi_ = (pmax + BOX_PADDING).float().numpy()
            if callback is not None:
                segment(i * passes)(1.0)
        grid, _, st["mesh_pass"] = hi.refine_grid(queries[i], lo, hi_, depth, coarse_depth, band,
                                                  smoothing=smoothing, device=dev, chunk=chunk, margin=margin,
                                                  progress=segment(i * passes + passes - 1))
        if callback is not None:
            segment(i * passes + passes - 1)(1.0)
        out.append((grid.cpu(), lo, np.asarray(hi_) - np.asarray(lo)))
        stats.append({k: v.as_dict() for k, v in st.items()})
    if record is not None:
        record["hierarchical_stats"] = stats
        record["points_queried"] = int(sum(s["points_queried"] for st in stats for s in st.values()))
        record["dense_points_official"] = int(passes * n * g ** 3)
    return out


PROGRESS_UNITS = 1000  # per refinement pass: the bar moves within a pass, chunk by chunk


def _segment_progress(callback, segments: int):
    """Coarse-to-fine decoding: ``segments`` refinement passes in a row, each reporting a fraction
    after every chunk. -> for_segment(k) -> progress(fraction) that calls ``callback(done, total)``
    on one never-decreasing scale (so the host checks Cancel after every VAE chunk)."""
    total = segments * PROGRESS_UNITS
    best = [0]

    def for_segment(k):
        if callback is None:
            return None

        def progress(fraction):
            best[0] = max(best[0], k * PROGRESS_UNITS + int(min(max(fraction, 0.0), 1.0) * PROGRESS_UNITS))
            callback(best[0], total)
        return progress
    return for_segment


def _progress(callback, passes: int):
    """Spread per-chunk progress of several passes over one 0..1 range."""
    def for_pass(k):
        if callback is None:
            return None
        return lambda done, total: callback(k * total + done, passes * total)
    return for_pass


# The box smoothing runs in slabs of this many x-planes: a slab's sums are cache-sized (2.7 MB at
# 257^3, not 68 MB for the whole grid), and slabs are independent, so the CPU streams share them.
SMOOTH_SLAB = 8


def box_smooth(grid: torch.Tensor) -> torch.Tensor:
    """The official "gaussian, sigma=1" smoothing: in fact a 3x3x3 mean filter, zero padded.

    Summed separably (x, then y, then z, then / 27) rather than with conv3d: ~5x faster
    on the CPU, and the summation order no longer depends on the array size or the
    conv algorithm picked, so a sub-volume gives bit-identical values (differs from the
    official conv3d by float rounding only, <= 3e-7 relative). On the CPU, slab by slab of
    ``SMOOTH_SLAB`` x-planes in the CPU streams (the same sums per value: the same bits)."""
    n = grid.shape[0]
    out = grid.new_empty(grid.shape)
    cpu = grid.device.type == "cpu"  # elsewhere: one slab, here
    slab = SMOOTH_SLAB if cpu else n
    map_blocks(lambda ab: _smooth_slab(grid, out, *ab), [(a, min(a + slab, n)) for a in range(0, n, slab)],
               stream_count() if cpu else 1)
    return out


def _smooth_slab(grid: torch.Tensor, out: torch.Tensor, a: int, b: int) -> None:
    """``box_smooth`` of the x-planes a..b-1 into ``out``: (u + v) + w along x, then y, then z, / 27."""
    n, n1, n2 = grid.shape
    p = grid.new_zeros((b - a + 2, n1 + 2, n2 + 2))  # planes a-1..b, zero outside the grid
    lo, hi = max(a - 1, 0), min(b + 1, n)
    p[lo - a + 1:hi - a + 1, 1:-1, 1:-1] = grid[lo:hi]
    x = torch.add(p[:-2], p[1:-1]).add_(p[2:])
    y = torch.add(x[:, :-2], x[:, 1:-1]).add_(x[:, 2:])
    dst = out[a:b]
    torch.add(y[:, :, :-2], y[:, :, 1:-1], out=dst)
    dst.add_(y[:, :, 2:]).div_(27.0)


def marching_cubes(grid: np.ndarray, bbox_min, bbox_size, level: float = 0.0):
    """skimage Lewiner at the level, then the official transform v / g * size + min
    (dividing by g = 2^d+1, not 2^d: a 0.39 % shrink kept for parity)."""
    from skimage import measure

    grid = np.ascontiguousarray(grid, np.float32)  # what skimage reads (no copy for a float32 grid)
    if not (grid.min() <= level <= grid.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    # Only cells with a corner <= level and one >= level hold a triangle: skimage visits just
    # those (its mask is read at a cell's upper corner). Same faces and vertices as the
    # unmasked call, bit for bit; ~2x faster on a 257^3 grid.
    verts, faces, _, _ = measure.marching_cubes(grid, level, method="lewiner", mask=_crossing_cells_mask(grid, level))
    verts = verts / np.array(grid.shape) * bbox_size + bbox_min
    return verts.astype(np.float32), np.ascontiguousarray(faces).astype(np.int64)


def _crossing_cells_mask(grid: np.ndarray, level: float) -> np.ndarray:
    """Point mask, True at the upper corner (i+1, j+1, k+1) of every cell (i, j, k) that
    has a corner <= level and a corner >= level."""
    mask = np.zeros(grid.shape, bool)
    straddling_cells(torch.from_numpy(grid), level, out=torch.from_numpy(mask)[1:, 1:, 1:])
    return mask


def grids_to_meshes(grids, smoothing: bool = True, record=None):
    """[(grid, bbox_min, bbox_size)] -> list of trimesh.Trimesh (empty mesh if no surface)."""
    meshes = []
    for i, (grid, lo, size) in enumerate(grids):
        g = box_smooth(grid.float()) if smoothing else grid.float()
        if record is not None:
            record.setdefault("_smoothed", []).append(g)
        v, f = marching_cubes(g.cpu().numpy(), lo, size)
        if record is not None:
            record[f"mesh{i}_vertices"], record[f"mesh{i}_faces"] = v, f
        meshes.append(processed_trimesh(v, f))
    if record is not None and "_smoothed" in record:
        record["smoothed_grid"] = torch.stack(record.pop("_smoothed"))
    return meshes


def processed_trimesh(vertices: np.ndarray, faces: np.ndarray):
    """The mesh ``trimesh.Trimesh(vertices, faces)`` gives with trimesh's default processing, as
    the official script builds its meshes: vertices equal once rounded to trimesh's merge
    precision are merged into the first of them (marching cubes makes a few where a grid value
    is exactly the level), in the order of their first use. Computed here with one sort of the
    rounded coordinates (~4x faster than trimesh's own pass at 200k vertices; the tests hold
    it to trimesh's result); meshes this does not cover (non-finite or unused vertices) go
    through trimesh itself."""
    import trimesh

    v = np.asarray(vertices, np.float64)  # what trimesh stores and rounds
    f = np.asarray(faces, np.int64)
    merged = _merge_rounded_vertices(v, f, trimesh.util.decimal_to_digits(trimesh.tol.merge))
    if merged is None:
        return trimesh.Trimesh(vertices, faces)
    keep, inverse = merged
    mesh = trimesh.Trimesh(v[keep], inverse[f], process=False)
    mesh.metadata["processed"] = True  # as trimesh's processing marks it
    return mesh


def _merge_rounded_vertices(v: np.ndarray, f: np.ndarray, digits: int):
    """-> (indices of the vertices kept, in order; index of its kept vertex for every vertex), or
    None when the mesh is empty, has a non-finite or unused vertex, or coordinates too large to
    pack 28 bits each."""
    if len(f) == 0 or not np.isfinite(v).all():
        return None
    used = np.zeros(len(v), bool)
    used[f] = True
    if not used.all():
        return None
    q = (v * 10 ** digits).round().astype(np.int64)
    if np.abs(q).max() >= 2 ** 27:
        return None
    xy = (q[:, 0] + 2 ** 27) << 28 | (q[:, 1] + 2 ** 27)
    order = np.lexsort((q[:, 2], xy))  # stable: equal rows in index order, the first one first
    xy, z = xy[order], q[order, 2]
    starts = np.ones(len(v), bool)
    starts[1:] = (xy[1:] != xy[:-1]) | (z[1:] != z[:-1])
    group = np.cumsum(starts) - 1
    first = np.empty(len(v), np.int64)
    first[order] = order[starts][group]  # every vertex -> the first vertex with its rounded position
    keep = first == np.arange(len(v))
    rank = np.cumsum(keep) - 1
    return np.flatnonzero(keep), rank[first]
