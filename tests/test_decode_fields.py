"""The decoders on analytic fields built to exercise one branch each, through the same entry
point as the model (``meshing.decode_grids`` with a VAE stand-in, ``testing.FieldVAE``):

* a deep, thin part that only the finest level sees, with detached specks beside it: the
  coarse-to-fine decode must equal the dense one with and without the 3x3x3 smoothing (the
  smoothing reads one voxel beyond every cell it can put a triangle in, and a very negative
  part pushes the smoothed surface a voxel outward; a speck beside a traced part is only
  found by looking around the cells that straddle);
* empty instances in the progressive decode: the official loop keeps the previous instance's
  box for an instance with no point inside (and the default box when it is the first).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midi_model.meshing import BBOX_MAX, BBOX_MIN, BOX_PADDING, decode_grids, grid_points, grids_to_meshes
from midi_model.testing import FieldVAE

DEPTH = 6
VOXEL = float(BBOX_MAX[0] - BBOX_MIN[0]) / 2 ** DEPTH


def rods_and_specks(seed: int = 4, deep: float = 40.0):
    """A sphere (r 0.42) with three rods thinner than a voxel sticking out of it, and four
    specks (0.4-1 voxel radius) 1.5-3 voxels beside the rods' outer halves. Inside values
    are ``deep`` times the signed distance (a very negative part), outside the distance."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape):
        return torch.rand(*shape, generator=g)

    dirs = torch.nn.functional.normalize(torch.randn(3, 3, generator=g), dim=1)
    radius = (0.3 + 0.5 * u(3)) * VOXEL
    length = 0.3 + 0.3 * u(3)
    which = torch.randint(0, 3, (4,), generator=g)
    along = 0.45 + (length[which] - 0.05) * u(4)
    side = torch.nn.functional.normalize(torch.cross(dirs[which], torch.randn(4, 3, generator=g), dim=1), dim=1)
    specks = dirs[which] * along[:, None] + side * ((1.5 + 1.5 * u(4)) * VOXEL)[:, None]
    speck_r = (0.4 + 0.6 * u(4)) * VOXEL

    def field(p: torch.Tensor) -> torch.Tensor:
        best = p.norm(dim=1) - 0.42
        for k in range(3):
            s = (p @ dirs[k]).clamp(0.3, 0.42 + float(length[k]))
            best = torch.minimum(best, (p - s[:, None] * dirs[k]).norm(dim=1) - radius[k])
        for k in range(4):
            best = torch.minimum(best, (p - specks[k]).norm(dim=1) - speck_r[k])
        return torch.where(best < 0, best * deep, best)
    return field


def sphere(centre, r):
    c = torch.tensor(centre, dtype=torch.float32)
    return lambda p: (p - c).norm(dim=1) - r


def empty(p):
    return p.norm(dim=1) + 0.5


def meshes(vae, decoder, smoothing=True):
    grids = decode_grids(vae, vae.latents(), DEPTH, decoder, smoothing=smoothing)
    return grids, grids_to_meshes(grids, smoothing)


def assert_same_meshes(a, b):
    assert len(a) == len(b)
    for ma, mb in zip(a, b):
        np.testing.assert_array_equal(np.asarray(ma.faces), np.asarray(mb.faces))
        np.testing.assert_array_equal(np.asarray(ma.vertices), np.asarray(mb.vertices))


def official_box(field):
    """The box of the default grid's points with value <= 0, padded (None: no such point)."""
    pts, _, _ = grid_points(BBOX_MIN, BBOX_MAX, DEPTH)
    inside = torch.from_numpy(pts)[field(torch.from_numpy(pts)) <= 0]
    if len(inside) == 0:
        return None
    return inside.min(0).values.numpy() - BOX_PADDING, inside.max(0).values.numpy() + BOX_PADDING


@pytest.mark.parametrize("smoothing", [True, False])
def test_coarse_to_fine_equals_dense_on_thin_deep_parts_and_specks(smoothing):
    vae = FieldVAE([rods_and_specks()])
    _, dense = meshes(vae, "dense", smoothing)
    vae.queried = 0
    _, fast = meshes(vae, "hierarchical", smoothing)
    assert len(dense[0].faces) > 5000
    assert_same_meshes(fast, dense)
    assert vae.queried < (2 ** DEPTH + 1) ** 3  # it did not just decode everything


@pytest.mark.parametrize("decoder", ["progressive", "progressive-hierarchical"])
def test_progressive_empty_instance_keeps_the_previous_box(decoder):
    first, second = sphere((0.3, -0.2, 0.1), 0.25), sphere((-0.4, 0.35, -0.3), 0.3)
    vae = FieldVAE([empty, first, empty, second, empty])
    grids, ms = meshes(vae, decoder)
    boxes = [(np.asarray(lo), np.asarray(lo) + np.asarray(size)) for _, lo, size in grids]
    # the first instance is empty: the default box
    np.testing.assert_allclose(boxes[0][0], BBOX_MIN, rtol=0, atol=1e-7)
    np.testing.assert_allclose(boxes[0][1], BBOX_MAX, rtol=0, atol=1e-7)
    for i, field in ((1, first), (3, second)):
        lo, hi = official_box(field)
        np.testing.assert_allclose(boxes[i][0], lo, rtol=0, atol=1e-6)
        np.testing.assert_allclose(boxes[i][1], hi, rtol=0, atol=1e-6)
    # an empty instance after a full one keeps that one's box
    for i in (2, 4):
        np.testing.assert_array_equal(boxes[i][0], boxes[i - 1][0])
        np.testing.assert_array_equal(boxes[i][1], boxes[i - 1][1])
    assert [len(m.faces) > 0 for m in ms] == [False, True, False, True, False]


def test_progressive_twins_give_the_same_meshes_with_empty_instances():
    vae = FieldVAE([empty, rods_and_specks(), empty, sphere((-0.4, 0.35, -0.3), 0.3)])
    _, official = meshes(vae, "progressive")
    _, fast = meshes(vae, "progressive-hierarchical")
    assert_same_meshes(fast, official)
