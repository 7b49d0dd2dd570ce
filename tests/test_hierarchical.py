"""Coarse-to-fine decode == the official dense / progressive decode, mesh for mesh.

Checked on an analytic SDF with thin parts (a rod thinner than one voxel and a fin
1.5 voxels thick, both attached to a sphere: invisible at the coarse levels, found by
tracing the surface) and on the golden checkpoint's final latents.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from midi_model import hierarchical as hi
from midi_model.meshing import (BBOX_MAX, BBOX_MIN, box_smooth, decode_grids, grid_points, grids_to_meshes,
                                marching_cubes)

DEPTH = 7  # 129^3, voxel = 2.01 / 128 ~ 0.0157


def thin_parts_sdf(p: torch.Tensor) -> torch.Tensor:
    """Sphere r=0.45 + a rod of radius 0.011 (0.7 voxel) along +x to x=0.93 + a fin
    0.024 thick (1.5 voxels) along -y. Negative inside."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    sphere = torch.sqrt(x * x + y * y + z * z) - 0.45
    rod = torch.maximum(torch.sqrt((y - 0.013) ** 2 + (z + 0.007) ** 2) - 0.011, (x - 0.65).abs() - 0.28)
    fin = torch.maximum(torch.maximum((z - 0.004).abs() - 0.012, (x + 0.05).abs() - 0.2), (y + 0.6).abs() - 0.3)
    return torch.minimum(sphere, torch.minimum(rod, fin))


def dense_values(query, lo, hi_, depth):
    pts, gsize, _ = grid_points(lo, hi_, depth)
    return query(torch.from_numpy(pts)).view(*gsize)


FINGER_VOXEL = 2.01 / 64  # depth 6
FINGER_AXIS = -1.005 + 33 * FINGER_VOXEL  # y = z = an odd (finest-only) lattice index


def finger_field(p):
    """A sphere with a finger 0.6 voxel (depth 6) in radius along x, between the coarser lattice points."""
    x, y, z = p.unbind(1)
    a = FINGER_AXIS
    sphere = torch.sqrt((x - a) ** 2 + (y - a) ** 2 + (z - a) ** 2) - 0.3
    finger = torch.maximum(torch.sqrt((y - a) ** 2 + (z - a) ** 2) - 0.6 * FINGER_VOXEL, (x - a - 0.45).abs() - 0.2)
    return torch.minimum(sphere, finger)


def finest_level_from_coarse(field, dense, depth, upsample):
    """The finest level right after upsampling: the even points known (values from ``dense``),
    the others filled by ``upsample``."""
    g = 2 ** depth + 1
    axes = [torch.from_numpy(np.linspace(BBOX_MIN[i], BBOX_MAX[i], g, dtype=np.float32)) for i in range(3)]
    lv = hi._Level(field, axes, depth, depth, hi.RefineStats(depth, g ** 3), 4096)
    lv.values = upsample(dense[::2, ::2, ::2].clone())
    lv.known = hi.upsample_known(torch.ones((g + 1) // 2, (g + 1) // 2, (g + 1) // 2, dtype=torch.bool))
    return lv


def mesh(grid, lo, size, smoothing=True):
    g = box_smooth(grid) if smoothing else grid
    return marching_cubes(g.numpy(), lo, size)


def assert_same_mesh(a, b):
    (va, fa), (vb, fb) = a, b
    assert len(fa) > 0
    assert fa.shape == fb.shape and va.shape == vb.shape
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(va, vb)


@pytest.fixture(scope="module")
def synthetic_dense():
    return dense_values(thin_parts_sdf, BBOX_MIN, BBOX_MAX, DEPTH)


@pytest.mark.parametrize("smoothing", [True, False])
def test_synthetic_thin_parts_same_mesh(synthetic_dense, smoothing):
    grid, known, st = hi.refine_grid(thin_parts_sdf, BBOX_MIN, BBOX_MAX, DEPTH, coarse_depth=4, band=1,
                                     smoothing=smoothing)
    size = BBOX_MAX - BBOX_MIN
    assert_same_mesh(mesh(grid, BBOX_MIN, size, smoothing), mesh(synthetic_dense, BBOX_MIN, size, smoothing))
    # every evaluated value is the field's own value
    assert torch.equal(grid[known], synthetic_dense[known])
    # elsewhere the sign is right
    assert torch.equal(grid > 0, synthetic_dense > 0)
    assert st.fraction < 0.15, st.as_dict()
    if not smoothing:
        # the rod's tip (x ~ 0.93) is in the mesh although no coarse lattice point sees it
        # (the 3x3x3 mean erases a rod this thin, in the dense mesh too)
        v, _ = mesh(grid, BBOX_MIN, size, smoothing)
        assert v[:, 0].max() > 0.9


def test_fraction_shrinks_with_depth():
    """The shell grows as 4^d, the grid as 8^d: depth 8 queries a few % of 257^3."""
    def sphere(p):
        return p.norm(dim=1) - 0.6

    _, _, st = hi.refine_grid(sphere, BBOX_MIN, BBOX_MAX, 8, coarse_depth=5, band=1)
    assert st.fraction < 0.06, st.as_dict()


def test_occupied_extent_matches_dense(synthetic_dense):
    """The progressive box pass: the index extent of the <= 0 points, found coarse-to-fine;
    the rod's tip sets the +x extent."""
    (lo, hi_), st = hi.occupied_extent(thin_parts_sdf, BBOX_MIN, BBOX_MAX, DEPTH, coarse_depth=4, band=1)
    idx = (synthetic_dense <= 0).nonzero()
    np.testing.assert_array_equal(lo, idx.min(dim=0).values.numpy())
    np.testing.assert_array_equal(hi_, idx.max(dim=0).values.numpy())
    assert st.fraction < 0.05, st.as_dict()


def test_no_surface_gives_none():
    ext, st = hi.occupied_extent(lambda p: p.norm(dim=1) + 1.0, BBOX_MIN, BBOX_MAX, 6, coarse_depth=3)
    assert ext is None and st.points_queried == 9 ** 3


def test_band_and_margin_must_not_be_negative():
    with pytest.raises(ValueError, match="band"):
        hi.refine_grid(thin_parts_sdf, BBOX_MIN, BBOX_MAX, 5, band=-1)
    with pytest.raises(ValueError, match="margin"):
        hi.refine_grid(thin_parts_sdf, BBOX_MIN, BBOX_MAX, 5, margin=-0.5)
    # the edges are allowed: no band, a zero margin (straddling cells only), coarse depth 0
    _, _, st = hi.refine_grid(thin_parts_sdf, BBOX_MIN, BBOX_MAX, 4, coarse_depth=0, band=0, margin=0.0)
    assert st.per_level[0] == 8 and set(st.per_level) <= set(range(5))
    _, _, st = hi.refine_grid(thin_parts_sdf, BBOX_MIN, BBOX_MAX, 4, coarse_depth=-3, margin=0.0)
    assert st.per_level[0] == 8  # below 0: from the single cell
    _, _, st = hi.refine_grid(thin_parts_sdf, BBOX_MIN, BBOX_MAX, 4, coarse_depth=9)
    assert st.per_level == {4: 17 ** 3}  # above the depth: the dense grid


def test_box_smooth_is_the_official_mean_filter():
    g = torch.randn(20, 21, 22)
    k = torch.full((1, 1, 3, 3, 3), 1.0 / 27.0)
    ref = F.conv3d(g[None, None], k, padding=1)[0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch resizing an `out` array of the wrong shape
        got = box_smooth(g)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_masked_marching_cubes_equals_full_volume(synthetic_dense):
    from skimage import measure

    g = box_smooth(synthetic_dense).numpy()
    size = BBOX_MAX - BBOX_MIN
    v, f = marching_cubes(g, BBOX_MIN, size)
    v0, f0, _, _ = measure.marching_cubes(g, 0.0, method="lewiner")
    v0 = v0 / np.array(g.shape) * size + BBOX_MIN
    np.testing.assert_array_equal(f, f0)
    np.testing.assert_array_equal(v, v0.astype(np.float32))


# ---- golden checkpoint -------------------------------------------------------------------

@pytest.mark.parametrize("depth,official,fast", [
    (5, "progressive", "progressive-hierarchical"),
    (5, "dense", "hierarchical"),
    (6, "dense", "hierarchical"),
])
def test_golden_same_meshes(golden_pipe, golden, depth, official, fast):
    lat = torch.from_numpy(golden["final_latents"])
    vae = golden_pipe.vae
    rec = {}
    ref_grids = decode_grids(vae, lat, depth, official)
    grids = decode_grids(vae, lat, depth, fast, record=rec, coarse_depth=3, band=1)
    # same boxes (the progressive box pass found the same extent of the <= 0 points)
    for (_, lo_a, size_a), (_, lo_b, size_b) in zip(ref_grids, grids):
        np.testing.assert_array_equal(np.asarray(lo_a), np.asarray(lo_b))
        np.testing.assert_array_equal(np.asarray(size_a), np.asarray(size_b))
    for a, b in zip(grids_to_meshes(ref_grids), grids_to_meshes(grids)):
        assert len(a.faces) > 0
        np.testing.assert_array_equal(np.asarray(a.faces), np.asarray(b.faces))
        np.testing.assert_allclose(np.asarray(a.vertices), np.asarray(b.vertices), atol=1e-6, rtol=0)
    assert rec["points_queried"] < rec["dense_points_official"]


def test_pipeline_decode_accepts_hierarchical(golden_pipe, golden):
    lat = torch.from_numpy(golden["final_latents"])[:1]
    rec = {}
    meshes = golden_pipe.decode(lat, 5, "progressive-hierarchical", record=rec, coarse_depth=3, band=2)
    assert len(meshes) == 1 and len(meshes[0].faces) > 0
    assert set(rec["hierarchical_stats"][0]) == {"box_pass", "mesh_pass"}


@pytest.mark.parametrize("smoothing", [False, True])
def test_surface_tracing_alone_follows_a_finger_the_lattice_never_sees(smoothing):
    """margin=None (no near-zero test): only the closure at the finest level finds a finger
    0.6 voxel in radius whose axis runs between the coarser lattice points, by evaluating the
    corners of the cells it crosses, again and again along its length. With smoothing the
    smoothing closure's first round evaluates the corners of the cells straddling then; their
    values change signs, so the later rounds find the straddling cells again and follow the rest
    of the finger (reusing the first round's cells would stop short of its end)."""
    depth, field = 6, finger_field
    dense = dense_values(field, BBOX_MIN, BBOX_MAX, depth)
    finger_points = int((dense[44:, 33, 33] <= 0).sum())  # beyond the sphere
    assert finger_points >= 8 and bool((dense[::2, ::2, ::2][22:] > 0).all())  # the coarser lattices miss it
    grid, known, st = hi.refine_grid(field, BBOX_MIN, BBOX_MAX, depth, coarse_depth=3, margin=None, smoothing=smoothing)
    assert torch.equal(grid <= 0, dense <= 0)
    assert st.closure_rounds > 2  # one round per few voxels of finger
    size = BBOX_MAX - BBOX_MIN
    assert_same_mesh(mesh(dense, BBOX_MIN, size, smoothing), mesh(grid, BBOX_MIN, size, smoothing))


def test_surface_tracing_box_pass_follows_the_finger_to_its_tip():
    """margin=None in the box pass: only the finest level's closure follows the finger, whose tip
    sets the +x extent of the <= 0 points."""
    depth = 6
    dense = dense_values(finger_field, BBOX_MIN, BBOX_MAX, depth)
    idx = (dense <= 0).nonzero()
    assert int(idx[:, 0].max()) > int((dense[::2, ::2, ::2] <= 0).nonzero()[:, 0].max()) * 2 + 1  # beyond the coarser lattice's
    (lo, hi_), st = hi.occupied_extent(finger_field, BBOX_MIN, BBOX_MAX, depth, coarse_depth=3, margin=None)
    np.testing.assert_array_equal(lo, idx.min(dim=0).values.numpy())
    np.testing.assert_array_equal(hi_, idx.max(dim=0).values.numpy())
    assert st.closure_rounds > 2


def test_smoothing_closure_goes_on_when_a_new_value_changes_sign():
    """margin=None: a one-point spike (-10) 1.5 voxels outside a sphere is first evaluated by the
    smoothing closure (it lies in the 3x3x3 neighbourhood of the sphere's smoothed crossing
    cells); its sign change makes new smoothed crossing cells around it, whose neighbourhoods
    a second round must evaluate for the smoothed mesh to be the dense one."""
    depth, vox = 6, 2.01 / 64

    def at(i):
        return -1.005 + i * vox

    spike_at = torch.tensor([at(43), at(33), at(31)])

    def field(p):
        sphere = (p - torch.tensor([at(32)] * 3)).norm(dim=1) - 0.3
        spike = torch.where((p - spike_at).norm(dim=1) < 0.1 * vox, -10.0, 1.0)
        return torch.minimum(sphere, spike)

    dense = dense_values(field, BBOX_MIN, BBOX_MAX, depth)
    grid, _, _ = hi.refine_grid(field, BBOX_MIN, BBOX_MAX, depth, coarse_depth=3, margin=None)
    assert float(grid[43, 33, 31]) == -10.0
    assert_same_mesh(mesh(dense, BBOX_MIN, BBOX_MAX - BBOX_MIN), mesh(grid, BBOX_MIN, BBOX_MAX - BBOX_MIN))


def test_band_refines_the_cells_next_to_the_crossing_ones():
    """band=1 (surface tracing only, margin=None): every cell within one cell of a crossing cell
    one level up is refined, so all finest points inside those cells are evaluated."""
    depth = 6

    def sphere(p):
        return p.norm(dim=1) - 0.43

    dense = dense_values(sphere, BBOX_MIN, BBOX_MAX, depth)
    grid, known, _ = hi.refine_grid(sphere, BBOX_MIN, BBOX_MAX, depth, coarse_depth=4, band=1, margin=None)
    parent = hi.dilate(hi.straddling_cells(dense[::2, ::2, ::2]), 1)
    inside = hi.cell_corners(hi.upsample_cells(parent))
    assert bool(known[inside].all())
    assert torch.equal(grid[inside], dense[inside])
    _, known0, _ = hi.refine_grid(sphere, BBOX_MIN, BBOX_MAX, depth, coarse_depth=4, band=0, margin=None)
    assert not bool(known0[inside].all())  # without the band some of them are left interpolated


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_closure_with_the_near_zero_test_ends_with_every_flagged_cell_evaluated(seed):
    """close(band, margin) from a level where only the coarse points are known (no complete
    stencil: slope 0): as values come in the slope grows, so every cell is checked again with
    it. At the end the returned slope is the bound over all known stencils and every cell
    flagged with it (straddling or near zero) has its corners evaluated."""
    depth = 5
    g = 2 ** depth + 1
    gen = torch.Generator().manual_seed(seed)
    centres, widths = torch.rand(6, 3, generator=gen) * 1.6 - 0.8, 0.25 + 0.25 * torch.rand(6, generator=gen)

    def field(p):  # a slow wave plus narrow steep bumps: the slope differs a lot from place to place
        wave = 0.6 + 0.15 * torch.sin(2.0 * p[:, 0] + 1.0) * torch.cos(1.5 * p[:, 1]) + 0.05 * p[:, 2]
        bumps = (torch.exp(-((p[:, None, :] - centres) ** 2).sum(-1) / widths ** 2) * (-1.0) ** torch.arange(6)).sum(1)
        return wave + bumps

    dense = dense_values(field, BBOX_MIN, BBOX_MAX, depth)
    lv = finest_level_from_coarse(field, dense, depth, hi.upsample_points)
    assert hi.gradient_bound(lv.values, lv.known) == 0.0
    slope = lv.close(0, 0.9)
    assert lv.stats.closure_rounds >= 2 and 0 < lv.stats.points_queried < g ** 3 // 2
    assert slope == hi.gradient_bound(lv.values, lv.known)
    assert bool(lv.known[hi.cell_corners(lv.flagged_cells(0, 0.9, slope))].all())
    assert torch.equal(lv.values[lv.known], dense[lv.known])
