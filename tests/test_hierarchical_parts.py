"""The coarse-to-fine decoder's building blocks (``midi_model.hierarchical``), each against a
brute-force reading of its docstring on small random lattices.

The decode tests (``test_hierarchical.py``, ``test_decoder_exact.py``) compare whole meshes:
they cannot see a part that only costs work or that is only ever called with level 0. These
check each function's own contract: other levels than 0, ties with the level, partial known
masks, shapes that are not cubes where the function allows them. Each runs in well under a
second.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from midi_model import hierarchical as hi

OFFSETS = list(itertools.product((-1, 0, 1), repeat=3))


def _rng(seed):
    return np.random.default_rng(seed)


def _ints(rng, shape, lo=-2, hi_=2):
    """Small integers as float32: sums and differences are exact, ties with a level are common."""
    return rng.integers(lo, hi_ + 1, size=shape).astype(np.float32)


def _corners(a):
    """(X,Y,Z) -> the 8 corner arrays of the (X-1,Y-1,Z-1) cells."""
    x, y, z = a.shape
    return [a[i:x - 1 + i, j:y - 1 + j, k:z - 1 + k] for i, j, k in itertools.product((0, 1), repeat=3)]


def _box_any(mask, r):
    """Dilation by a (2r+1)^3 cube, point by point."""
    out = np.zeros_like(mask)
    for p in np.argwhere(mask):
        lo = np.maximum(p - r, 0)
        out[lo[0]:p[0] + r + 1, lo[1]:p[1] + r + 1, lo[2]:p[2] + r + 1] = True
    return out


# ---- lattice morphology ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compare_is_torchs_comparison_with_the_level_in_the_arrays_dtype(dtype):
    """Levels that float32 cannot hold (0.1, 1/3), ties, inf and nan, on a lattice large enough
    for numpy's path and on a small one (torch's)."""
    for shape in ((70, 70, 70), (5, 6, 7)):
        a = torch.from_numpy(_rng(3).random(shape) * 0.2).to(dtype)
        flat = a.view(-1)
        flat[:4] = torch.tensor([0.1, float(np.float32(0.1)), float("inf"), float("nan")], dtype=dtype)
        for level in (0.1, 0.0, 1 / 3, float("inf"), float(np.nextafter(np.float32(0.1), 1))):
            for op, torch_op in (("<=", a.__le__), (">=", a.__ge__), (">", a.__gt__)):
                assert torch.equal(hi.compare(a, op, level), torch_op(level)), (shape, level, op)


@pytest.mark.parametrize("shape, share", [
    ((257, 257, 257), 0.002),  # sparse, the largest lattice: numpy's pass, the last indices exact
    ((256, 257, 256), 0.01),  # not a cube
    ((65, 65, 65), 0.3),  # dense or small: torch's nonzero
    ((8, 9, 10), 0.5),
])
def test_mask_points_are_the_nonzero_indices_in_flat_order(shape, share):
    rng = _rng(7)
    mask = torch.from_numpy(rng.random(shape) < share)
    mask[-1, -1, -1] = mask[0, 0, 0] = True
    got = hi.mask_points(mask)
    assert got.dtype == torch.int64
    assert torch.equal(got, mask.nonzero())
    assert hi.mask_points(torch.zeros(shape, dtype=torch.bool)).shape == (0, 3)

@pytest.mark.parametrize("level", [0.0, 1.0, -0.5])
def test_straddling_cells_have_a_corner_on_each_side_ties_included(level):
    rng = _rng(1)
    rel = np.where(rng.random((6, 5, 7)) < 0.1, _ints(rng, (6, 5, 7), -2, 0), _ints(rng, (6, 5, 7), 1, 3))
    rel[1:4, 1:4, 1:4] = 0.0  # cells with every corner on the level straddle it
    rel[4:, 3:, 5:] = -1.0    # and so do cells with corners on it and below it only
    a = rel + np.float32(level)
    c = np.stack(_corners(a))
    ref = (c <= level).any(axis=0) & (c >= level).any(axis=0)
    got = hi.straddling_cells(torch.from_numpy(a), level).numpy()
    np.testing.assert_array_equal(got, ref)
    assert got[1:3, 1:3, 1:3].all() and got[3, 2, 4] and not ref.all()
    if level == 0.0:
        np.testing.assert_array_equal(hi.straddling_cells(torch.from_numpy(a)).numpy(), ref)  # default level 0


@pytest.mark.parametrize("r", [0, 1, 2, 3])
def test_dilate_is_the_cube_dilation(r):
    mask = _rng(2).random((9, 8, 10)) > 0.97
    mask[0, 0, 0] = mask[8, 7, 9] = mask[4, 0, 9] = True  # corners and faces: the cube is clipped there
    got = hi.dilate(torch.from_numpy(mask), r).numpy()
    np.testing.assert_array_equal(got, _box_any(mask, r))
    assert not got.all()


def test_dilate_by_a_negative_radius_is_no_dilation():
    mask = torch.from_numpy(_rng(3).random((5, 5, 5)) > 0.8)
    assert torch.equal(hi.dilate(mask, -1), mask)


def test_cell_corners_marks_the_8_corners_of_each_cell():
    cells = _rng(4).random((4, 5, 6)) > 0.85
    cells[3, 4, 5] = True
    ref = np.zeros((5, 6, 7), bool)
    for c in np.argwhere(cells):
        ref[c[0]:c[0] + 2, c[1]:c[1] + 2, c[2]:c[2] + 2] = True
    np.testing.assert_array_equal(hi.cell_corners(torch.from_numpy(cells)).numpy(), ref)


def test_cell_any_is_a_cell_with_a_marked_corner():
    mask = _rng(5).random((5, 6, 7)) > 0.9
    np.testing.assert_array_equal(hi.cell_any(torch.from_numpy(mask)).numpy(), np.any(_corners(mask), axis=0))


def test_upsample_signs_takes_each_point_from_its_lower_coarse_corner():
    """The finest level's fill: the coarse value at idx // 2, so every point of a cell whose
    corners share a strict sign gets that sign (what the interpolation would give too)."""
    a = _rng(6).normal(size=(4, 4, 4)).astype(np.float32) + 0.8  # mostly positive: some one-signed cells
    got = hi.upsample_signs(torch.from_numpy(a)).numpy()
    assert got.shape == (7, 7, 7)
    for p in np.ndindex(got.shape):
        assert got[p] == a[tuple(i // 2 for i in p)], p
    interp = hi.upsample_points(torch.from_numpy(a)).numpy()
    cells = np.stack(_corners(a))
    one_signed = (cells > 0).all(axis=0) | (cells < 0).all(axis=0)
    for c in np.argwhere(one_signed):
        sl = tuple(slice(2 * i, 2 * i + 3) for i in c)
        assert (np.sign(got[sl]) == np.sign(interp[sl])).all()
    assert one_signed.any() and not one_signed.all()


# ---- one level finer ------------------------------------------------------------------------

def test_upsample_points_is_trilinear_interpolation_at_the_midpoints():
    a = torch.from_numpy(_rng(7).normal(size=(5, 5, 5)).astype(np.float32))
    got = hi.upsample_points(a)
    ref = F.interpolate(a[None, None].double(), size=(9, 9, 9), mode="trilinear", align_corners=True)[0, 0]
    assert got.shape == (9, 9, 9) and got.dtype == a.dtype
    assert torch.equal(got[::2, ::2, ::2], a)
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=0)
    # a midpoint along y alone is the mean of its two neighbours, bit for bit
    assert torch.equal(got[2, 1::2, 4], (a[1, :-1, 2] + a[1, 1:, 2]) * 0.5)


def test_upsample_known_keeps_the_even_points_only():
    k = torch.from_numpy(_rng(8).random((4, 4, 4)) > 0.5)
    got = hi.upsample_known(k)
    assert got.shape == (7, 7, 7)
    assert torch.equal(got[::2, ::2, ::2], k)
    got[::2, ::2, ::2] = False
    assert not bool(got.any())


def test_upsample_cells_gives_each_cell_its_8_children():
    c = _rng(9).random((3, 4, 2)) > 0.5
    got = hi.upsample_cells(torch.from_numpy(c)).numpy()
    ii = np.indices((6, 8, 4)) // 2
    np.testing.assert_array_equal(got, c[ii[0], ii[1], ii[2]])


# ---- the refinement tests -------------------------------------------------------------------

@pytest.mark.parametrize("level", [0.0, 0.75])
def test_near_zero_cells_have_a_corner_within_the_threshold_of_the_level(level):
    rng = _rng(10)
    far = _ints(rng, (6, 7, 5), 3, 8) * np.where(rng.random((6, 7, 5)) < 0.5, -1, 1).astype(np.float32)
    rel = np.where(rng.random((6, 7, 5)) < 0.05, _ints(rng, (6, 7, 5), -2, 2), far) * np.float32(0.5)
    a = rel + np.float32(level)
    c = np.abs(np.stack(_corners(a)) - level)
    for thr in (0.0, 0.5, 1.0):  # corners exactly at the threshold count
        ref = (c <= thr).any(axis=0)
        np.testing.assert_array_equal(hi.near_zero_cells(torch.from_numpy(a), thr, level).numpy(), ref)
        assert ref.any() and not ref.all()
    assert bool(hi.near_zero_cells(torch.from_numpy(a), math.inf, level).all())
    if level == 0.0:
        np.testing.assert_array_equal(hi.near_zero_cells(torch.from_numpy(a), 0.5).numpy(), (c <= 0.5).any(axis=0))


def _stencil_norms(values, known):
    """point p -> (|(v(p+x) - v(p), v(p+y) - v(p), v(p+z) - v(p))|, whether all four are known),
    for p in [0, m-2]^3 (float64)."""
    v = values.double().numpy()
    k = known.numpy()
    x, y, z = (s - 1 for s in v.shape)
    c = v[:x, :y, :z]
    g = np.sqrt((v[1:, :y, :z] - c) ** 2 + (v[:x, 1:, :z] - c) ** 2 + (v[:x, :y, 1:] - c) ** 2)
    ok = k[:x, :y, :z] & k[1:, :y, :z] & k[:x, 1:, :z] & k[:x, :y, 1:]
    return g, ok


def _partly_known(seed, m=7, share=0.7):
    rng = _rng(seed)
    values = rng.normal(size=(m, m, m)).astype(np.float32)
    known = rng.random((m, m, m)) < share
    values[~known] = 100.0  # an unknown value must never reach the bound
    return torch.from_numpy(values), torch.from_numpy(known)


def test_gradient_bound_counts_only_stencils_whose_four_points_are_known():
    for seed in range(4):
        values, known = _partly_known(seed)
        g, ok = _stencil_norms(values, known)
        assert ok.any() and not ok.all()
        assert hi.gradient_bound(values, known) == pytest.approx(g[ok].max(), rel=1e-6)
        # a linear field: the norm of its gradient, whatever the direction
    ii = torch.arange(6, dtype=torch.float32)
    plane = (ii[:, None, None] * 0.3 - ii[None, :, None] * 1.2 + ii[None, None, :] * 0.4).expand(6, 6, 6).contiguous()
    assert hi.gradient_bound(plane, torch.ones(6, 6, 6, dtype=torch.bool)) == pytest.approx(1.3, rel=1e-6)


def test_gradient_bound_is_0_without_a_complete_stencil():
    values, known = _partly_known(0)
    known[:] = False
    assert hi.gradient_bound(values, known) == 0.0
    k = torch.ones_like(known)
    k[:, :, 1::2] = False  # every stencil misses its +z neighbour or its base
    assert hi.gradient_bound(values, k) == 0.0
    assert hi.gradient_bound(torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool)) == 0.0  # no stencil at all


def test_gradient_bound_near_is_gradient_bound_over_the_stencils_holding_the_points():
    m = 7
    for seed in range(6):
        values, known = _partly_known(seed, m, share=0.8)
        g, ok = _stencil_norms(values, known)
        rng = _rng(100 + seed)
        idx = torch.from_numpy(rng.integers(0, m, size=(rng.integers(1, 6), 3)))
        if seed == 0:
            idx = torch.tensor([[m - 1, m - 1, m - 1], [0, 0, 0]])  # stencils only on one side of the box
        touched = np.zeros_like(ok)
        for p in idx.numpy():
            for back in ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)):
                b = p - np.array(back)
                if (b >= 0).all() and (b < m - 1).all():
                    touched[tuple(b)] = True
        sel = touched & ok
        ref = float(g[sel].max()) if sel.any() else 0.0
        assert hi.gradient_bound_near(values, known, idx) == pytest.approx(ref, rel=1e-6), seed
    # one complete stencil: each of its four points finds it, in whichever role it plays there
    values, _ = _partly_known(9, m)
    base = np.array([2, 3, 1])
    stencil = [base + np.array(e) for e in ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1))]
    known = torch.zeros(m, m, m, dtype=torch.bool)
    for q in stencil:
        known[tuple(q)] = True
    norm = math.sqrt(sum((float(values[tuple(q)]) - float(values[tuple(base)])) ** 2 for q in stencil[1:]))
    for q in stencil:
        assert hi.gradient_bound_near(values, known, torch.from_numpy(q[None])) == pytest.approx(norm, rel=1e-6), q
    assert hi.gradient_bound_near(values, known, torch.tensor([[3, 4, 1]])) == 0.0  # in no stencil of base
    values, known = _partly_known(1, m, share=1.0)
    everything = torch.stack(torch.meshgrid(*[torch.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert hi.gradient_bound_near(values, known, everything) == pytest.approx(hi.gradient_bound(values, known),
                                                                              rel=1e-6)


# ---- the finest level's certificates --------------------------------------------------------

def _fine_points(m):
    n = 2 * m - 1
    return torch.stack(torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)


def _certified_reference(values, known, idx, slope, slack):
    """certified_points' docstring, point by point."""
    v, k = values.double().numpy(), known.numpy()
    out = np.zeros(idx.shape[0])
    for n, p in enumerate(idx.numpy()):
        odd = p % 2
        if not odd.any():
            continue
        thr = slack * slope * math.sqrt(odd.sum())
        settle = []
        for corner in itertools.product(*[(0, 1) if o else (0,) for o in odd]):
            q = tuple(p // 2 + np.array(corner))
            if k[q] and abs(v[q]) > thr:
                settle.append(v[q])
        if settle and (min(settle) > 0 or max(settle) < 0):  # corners that disagree settle nothing
            out[n] = math.copysign(max(abs(s) for s in settle) - thr, settle[0])
    return out


def test_certified_points_follow_their_docstring():
    cases = ((0.5, 1.04), (1.0, 1.0), (0.0, 1.2), (2.0, 0.9), (1.0, 1.0), (0.5, 2.0))
    for seed, (slope, slack) in enumerate(cases):
        rng = _rng(20 + seed)
        values = torch.from_numpy(rng.normal(scale=3.0, size=(4, 4, 4)).astype(np.float32))
        if seed >= 4:  # integers: corners exactly at an edge's threshold (1) settle nothing
            values = torch.from_numpy(_ints(rng, (4, 4, 4), -3, 3))
        known = torch.from_numpy(rng.random((4, 4, 4)) < 0.8)
        idx = _fine_points(4)
        got = hi.certified_points(values, known, idx, slope, slack).double().numpy()
        ref = _certified_reference(values, known, idx, slope, slack)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
        assert (ref > 0).any() and (ref < 0).any() and (ref == 0).any()


def test_certified_signs_and_bounds_hold_for_a_field_within_the_slope():
    """A linear field whose gradient norm is the slope (per fine step): every certified point has
    the field's sign and at least the certified magnitude."""
    rng = _rng(30)
    m = 5
    g = rng.normal(size=3)
    fine = _fine_points(m).double().numpy()
    for b in (0.1, -0.7, 2.3):
        field = fine @ g + b  # field at the fine points
        lattice = torch.from_numpy(field.reshape((2 * m - 1,) * 3)[::2, ::2, ::2].astype(np.float32))
        known = torch.ones_like(lattice, dtype=torch.bool)
        sure = hi.certified_points(lattice, known, _fine_points(m), float(np.linalg.norm(g)), 1.0).double().numpy()
        assert (sure != 0).sum() > 100
        assert (np.sign(sure[sure != 0]) == np.sign(field[sure != 0])).all()
        assert (np.abs(sure) <= np.abs(field) + 1e-5).all()


def test_tightened_certificates_shrink_by_the_extra_threshold():
    rng = _rng(40)
    idx = _fine_points(3)
    k = (idx % 2).sum(dim=1).double()
    sure = torch.from_numpy(rng.normal(scale=2.0, size=idx.shape[0]).astype(np.float32))
    sure[::7] = 0.0
    for extra in (0.0, 0.3, 1.0):
        got = hi.tighten_certificates(sure, idx, extra).double().numpy()
        mag = np.abs(sure.double().numpy()) - extra * np.sqrt(k.numpy())
        ref = np.where(mag > 0, np.sign(sure.double().numpy()) * mag, 0.0)
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
        assert (got != 0).any()


# ---- the smoothed signs ---------------------------------------------------------------------

def _possible_smoothed_signs(true_rel, known):
    """Brute force over the 3x3x3 zero-padded sums of a field measured from the level, known
    exactly where ``known`` and only by its sign (> 0 or <= 0) elsewhere: -> (above possible,
    at-or-below possible, the known part of the sum, the sum of its magnitudes)."""
    t = np.pad(true_rel.astype(np.float64), 1)
    k = np.pad(known, 1, constant_values=True)
    shape = true_rel.shape
    s = np.zeros(shape)
    mag = np.zeros(shape)
    unk_pos = np.zeros(shape, bool)
    unk_neg = np.zeros(shape, bool)
    for i, j, l in OFFSETS:
        sl = (slice(1 + i, 1 + i + shape[0]), slice(1 + j, 1 + j + shape[1]), slice(1 + l, 1 + l + shape[2]))
        tv, kv = t[sl], k[sl]
        s += np.where(kv, tv, 0.0)
        mag += np.where(kv, np.abs(tv), 0.0)
        unk_pos |= ~kv & (tv > 0)
        unk_neg |= ~kv & (tv <= 0)
    # unknown terms > 0 can be arbitrarily small or large, those <= 0 anything down from 0
    above = unk_pos | (s > 0)
    below = unk_neg | (s < 0) | ((s == 0) & ~unk_pos)
    return above, below, s, mag


def _check_smoothed_signs(true_rel, stored, known, level, interior_only):
    may_above, may_below = hi.smoothed_signs(torch.from_numpy(stored), torch.from_numpy(known), level)
    may_above, may_below = may_above.numpy(), may_below.numpy()
    above, below, s, mag = _possible_smoothed_signs(true_rel, known)
    inner = np.zeros_like(known)
    inner[1:-1, 1:-1, 1:-1] = True
    look = inner if interior_only else np.ones_like(known)
    # sound: a possible sign is never ruled out
    assert not (above & ~may_above & look).any()
    assert not (below & ~may_below & look).any()
    # tight: outside the rounding margin (sums that cancel exactly) nothing impossible is allowed
    clear = look & ~((s == 0) & (mag > 0))
    np.testing.assert_array_equal(may_above[clear], above[clear])
    np.testing.assert_array_equal(may_below[clear], below[clear])
    return above & below & look  # points whose sign is open


def _smoothing_field(seed, shape=(8, 8, 8)):
    """Small integers (exact sums), a block exactly on the level with one +1 and, farther, one -1
    point in it (neighbourhoods made of one nonzero term), and a block of +2."""
    rng = _rng(seed)
    t = _ints(rng, shape)
    t[1:6, 1:6, 1:5] = 0.0
    t[2, 2, 2] = 1.0
    t[4, 4, 3] = -1.0 if seed % 2 else 1.0
    t[5:, 5:, 4:] = 2.0
    return t


@pytest.mark.parametrize("level", [0.0, 0.5, -1.5, 1.0])
def test_smoothed_signs_with_every_value_known_are_the_signs_of_the_3x3x3_mean(level):
    """All known: exactly the sign of the official (zero-padded) mean of the values, compared with
    the level; for a level other than 0 the padding adds terms below or above it, so only the
    points away from the border are compared there."""
    for seed in range(3):
        t = _smoothing_field(seed)
        stored = t + np.float32(level)
        known = np.ones(t.shape, bool)
        _check_smoothed_signs(t, stored, known, level, interior_only=level != 0.0)
        if level == 0.0:  # the same as comparing the official box mean with the level
            from midi_model.meshing import box_smooth

            mean = box_smooth(torch.from_numpy(stored)).numpy()
            may_above, may_below = (m.numpy() for m in hi.smoothed_signs(torch.from_numpy(stored),
                                                                        torch.from_numpy(known)))
            sure = may_above != may_below
            assert sure.mean() > 0.9
            np.testing.assert_array_equal(may_above[sure], mean[sure] > 0)


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_smoothed_signs_with_unknown_values_allow_every_possible_sign(level):
    """Unknown points hold a value of the right sign only (as the interpolated and certified
    values do): every sign the mean can have for some field with those signs is allowed, and
    none it cannot have (away from exact cancellations)."""
    opened = 0
    for seed in range(6):
        rng = _rng(50 + seed)
        t = _smoothing_field(seed)
        known = rng.random(t.shape) < (0.5 if seed < 3 else 0.9)
        known[3:5, 3:5, 2:4] = seed % 2 == 0  # around the lone +1 / -1: all known, or all unknown
        # a stored unknown value is any value of the true value's side: > 0, or <= 0 (0 included)
        fake = np.where(t > 0, rng.uniform(0.01, 5.0, t.shape), -rng.uniform(0.0, 5.0, t.shape) * (rng.random(t.shape) < 0.7))
        rel = np.where(known, t, fake).astype(np.float32)
        opened += _check_smoothed_signs(t, rel + np.float32(level), known, level, interior_only=level != 0.0).sum()
    assert opened > 20


def test_smoothed_signs_at_the_eight_corners_of_the_grid():
    """A sign change in each corner cell of the grid: the points there have neighbours
    outside on three axes at once (the zero padding), at the low and at the high end."""
    for seed in range(3):
        t = _ints(_rng(70 + seed), (6, 6, 6))
        for c in itertools.product((0, -1), repeat=3):
            t[c] = 1.0
            t[tuple(1 if x == 0 else -2 for x in c)] = -1.0
        _check_smoothed_signs(t, t.copy(), np.ones(t.shape, bool), 0.0, interior_only=False)


def test_smoothed_signs_leave_a_sum_within_the_rounding_margin_open():
    """A known sum within 1e-5 of the sum of its magnitudes (both ends counted as inside) could
    have either sign after float32 rounding: both stay possible; beyond it the sign is sure."""
    for a, b, sure in ((50000.25, -49999.75, False), (50000.5, -49999.5, False), (50001.0, -49999.0, True)):
        for sign in (1.0, -1.0):
            v = torch.zeros(6, 6, 6)
            v[2, 2, 2], v[2, 3, 2] = sign * a, sign * b
            above, below = hi.smoothed_signs(v, torch.ones(6, 6, 6, dtype=torch.bool))
            if sure:
                assert (bool(above[2, 2, 2]), bool(below[2, 2, 2])) == (sign > 0, sign < 0)
            else:
                assert bool(above[2, 2, 2]) and bool(below[2, 2, 2]), (a, b, sign)


def test_smoothed_signs_of_a_field_with_no_sign_change():
    for value in (0.0, -1.0, 3.0):
        v = torch.full((4, 5, 6), value)
        k = torch.zeros(4, 5, 6, dtype=torch.bool)
        k[::2] = True
        above, below = hi.smoothed_signs(v, k)
        assert bool((above == (value > 0)).all()) and bool((below == (value <= 0)).all())


def test_evaluating_points_records_what_they_replace_and_whether_a_sign_changed():
    """``evaluate_points`` keeps the values the new ones replace (at those very points), and
    ``signs_changed`` compares the two sides of the level point by point."""
    m = 5
    stored = torch.arange(m ** 3, dtype=torch.float32).view(m, m, m) - 60.0  # every point a value of its own
    field = {}

    def query(p):  # the value at a point: -(its stored value), so every sign flips (60 -> -60 ...)
        return torch.stack([field[tuple(round(float(c), 3) for c in q)] for q in p])

    axes = [torch.arange(m, dtype=torch.float32)] * 3
    lv = hi._Level(query, axes, 2, 2, hi.RefineStats(2, m ** 3), 4)
    lv.values, lv.known = stored.clone(), torch.zeros(m, m, m, dtype=torch.bool)
    idx = torch.tensor([[0, 1, 4], [3, 0, 2], [4, 4, 1]])
    for i, j, k in idx.tolist():
        field[(float(i), float(j), float(k))] = -stored[i, j, k]
    lv.evaluate_points(idx)
    assert torch.equal(lv.last_old, stored[idx[:, 0], idx[:, 1], idx[:, 2]])
    assert torch.equal(lv.values[idx[:, 0], idx[:, 1], idx[:, 2]], -stored[idx[:, 0], idx[:, 1], idx[:, 2]])
    assert lv.signs_changed() and not lv.signs_changed(level=100.0)  # all below 100 before and after
    # the same sides of the level: no change
    idx2 = torch.tensor([[2, 3, 1]])
    field[(2.0, 3.0, 1.0)] = stored[2, 3, 1] + 0.5
    lv.evaluate_points(idx2)
    assert float(lv.last_old[0]) == float(stored[2, 3, 1]) and not lv.signs_changed()
    # a change seen at its own point only: (3, 3, 0), which a mix-up of the first two indices
    # would read instead of (4, 3, 0), holds a value of the old one's sign
    field[(4.0, 3.0, 0.0)] = -stored[4, 3, 0]
    lv.evaluate_points(torch.tensor([[4, 3, 0]]))
    assert lv.signs_changed()


def test_the_coarse_to_fine_passes_query_in_chunks_of_50000_by_default():
    for run in (lambda q: hi.refine_grid(q, [-1.0] * 3, [1.0] * 3, 6, coarse_depth=6),
                lambda q: hi.occupied_extent(q, [-1.0] * 3, [1.0] * 3, 6, coarse_depth=6)):
        sizes = []
        run(lambda p: (sizes.append(len(p)), p.norm(dim=1) - 0.5)[1])
        assert sizes[:6] == [50_000] * 5 + [65 ** 3 - 250_000], sizes  # the first level, 65^3 points


# ---- progress -------------------------------------------------------------------------------

def test_refine_grid_reports_progress_after_every_chunk_of_queries():
    """``progress(fraction)`` follows every query chunk: the fraction of the levels done, the
    current level counting by the share of its points done, 0..1 (the finest level's chunks
    end at 1)."""
    depth, coarse, chunk = 5, 2, 100
    events = []

    def sphere(p):
        events.append(("query", p.shape[0]))
        return p.norm(dim=1) - 0.55

    def progress(fraction):
        events.append(("progress", fraction))

    _, _, st = hi.refine_grid(sphere, np.full(3, -1.0), np.full(3, 1.0), depth, coarse_depth=coarse, chunk=chunk,
                              progress=progress)
    kinds = [e[0] for e in events]
    assert kinds == ["query", "progress"] * (len(events) // 2)
    sizes = [e[1] for e in events[0::2]]
    fractions = [e[1] for e in events[1::2]]
    assert sum(sizes) == st.points_queried and max(sizes) == chunk
    assert st.dense_points == 33 ** 3 and st.fraction == st.points_queried / 33 ** 3
    levels = depth - coarse + 1
    # the coarse lattice first: 5^3 = 125 points in chunks of 100 and 25
    assert sizes[:2] == [100, 25]
    assert fractions[:2] == [(100 / 125) / levels, 1.0 / levels]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions[-1] == 1.0 and len(set(fractions)) > levels
    # each level's share is reached at the end of its queries: 1/4, 2/4, 3/4, 1 all appear
    for lvl in range(1, levels + 1):
        assert lvl / levels in fractions


def test_occupied_extent_reports_progress_too():
    seen = []
    ext, _ = hi.occupied_extent(lambda p: p.norm(dim=1) - 0.5, np.full(3, -1.0), np.full(3, 1.0), 5, coarse_depth=3,
                                chunk=200, progress=seen.append)
    assert ext is not None and len(seen) > 3
    assert all(0.0 <= f <= 1.0 for f in seen) and seen[0] == pytest.approx((200 / 729) / 3)


# ---- refine_grid's contract -----------------------------------------------------------------

def _dense(query, depth):
    from midi_model.meshing import grid_points

    pts, size, _ = grid_points(np.full(3, -1.0), np.full(3, 1.0), depth)
    return query(torch.from_numpy(pts)).view(*size)


def _ball(p):
    return (p - torch.tensor([0.07, -0.11, 0.05])).norm(dim=1) - 0.3


@pytest.mark.parametrize("smoothing", [False, True])
def test_refine_grid_at_another_level_is_the_decode_of_the_shifted_field(smoothing):
    """``level``: the surface is where the field equals it. Decoding f at level L is decoding f - L
    at 0, point for point: the same points queried, the same values there (shifted), the same
    sides of the level everywhere; and without smoothing the grid has the field's values at every
    corner of a cell that straddles the level."""
    depth = 6
    lo, hi_ = np.full(3, -1.0), np.full(3, 1.0)
    dense = _dense(_ball, depth)
    for level in (0.25, -0.2):
        def shifted(p):
            return _ball(p) - level

        grid, known, st = hi.refine_grid(_ball, lo, hi_, depth, coarse_depth=3, level=level, smoothing=smoothing)
        grid0, known0, st0 = hi.refine_grid(shifted, lo, hi_, depth, coarse_depth=3, smoothing=smoothing)
        assert torch.equal(known, known0) and st.points_queried == st0.points_queried
        assert not bool(known.all())
        assert torch.equal(grid[known] - level, grid0[known])
        assert torch.equal(grid > level, grid0 > 0) and torch.equal(grid > level, dense > level)
        assert torch.equal(grid[known], dense[known])
        if not smoothing:
            corners = hi.cell_corners(hi.straddling_cells(dense, level))
            assert bool(known[corners].all())


def test_refine_grid_certifies_inside_refined_cells_and_evaluates_the_crossing_cells():
    """Inside the refined cells a point whose sign its coarser corners settle is not evaluated,
    at the finest level (only its sign is read) and above it (its bound keeps it out of the
    near-zero test); the corners of every cell that straddles 0 at a level are evaluated there."""
    depth = 6
    dense = _dense(_ball, depth)
    _, known, _ = hi.refine_grid(_ball, np.full(3, -1.0), np.full(3, 1.0), depth, coarse_depth=3, smoothing=False)
    for step in (2, 1):  # the level above the finest, the finest
        k = known[::step, ::step, ::step]
        assert bool(k[hi.cell_corners(hi.straddling_cells(dense[::step, ::step, ::step]))].all()), step
        crossed = hi.straddling_cells(dense[::2 * step, ::2 * step, ::2 * step])  # one level up
        inside = hi.cell_corners(hi.upsample_cells(crossed))
        assert not bool(k[inside].all()), step
        assert bool(k[inside].any())


def _certified_level(slope, margin=0.9, depth=4, level=0.0):
    """The ball (shifted by ``level``) decoded on [-1, 1]^3 up to level 3 of ``depth``: level 2
    evaluated whole, every cell refined, level 3 certified from it at ``level``.
    -> (the level state, the slope ``certify`` returned)."""
    g = 2 ** depth + 1
    axes = [torch.linspace(-1.0, 1.0, g)] * 3
    lv = hi._Level(lambda p: _ball(p) + level, axes, depth, 2, hi.RefineStats(depth, g ** 3), 4096)
    lv.values, lv.known = torch.zeros(5, 5, 5), torch.zeros(5, 5, 5, dtype=torch.bool)
    lv.evaluate(torch.ones_like(lv.known))
    coarse_values, coarse_known = lv.values, lv.known
    lv.values, lv.known = hi.upsample_points(coarse_values), hi.upsample_known(coarse_known)
    lv.level = 3
    used = lv.certify(torch.ones(4, 4, 4, dtype=torch.bool), coarse_values - level, coarse_known, slope, margin, level)
    return lv, used


def test_certify_above_the_finest_level_keeps_true_bounds_out_of_the_near_zero_test():
    """Above the finest level a settled point holds a value of its true sign whose magnitude is a
    lower bound of |f| and exceeds margin x slope (so it flags no cell on its own); the other points
    are evaluated; ``bounds`` lists exactly the settled points for ``loosen_bounds``."""
    margin = 0.9
    lv, used = _certified_level(0.3, margin)  # the ball's gradient: 0.25 per level-3 step
    truth = _dense(_ball, 4)[::2, ::2, ::2]
    settled = ~lv.known
    assert bool(settled.any()) and bool(lv.known.any()) and used >= 0.3
    assert torch.equal(lv.values[lv.known], truth[lv.known])
    v, t = lv.values[settled], truth[settled]
    assert torch.equal(v > 0, t > 0) and bool((v.abs() <= t.abs()).all())
    assert bool((v.abs() > margin * used).all())
    idx, bound, slope, _, level = lv.bounds
    flat = torch.zeros(9 ** 3, dtype=torch.bool)
    flat[hi._flat_index(idx, 9)] = True
    assert torch.equal(flat.view(9, 9, 9), settled) and slope == used and level == 0.0
    assert torch.equal(lv.values.view(-1)[hi._flat_index(idx, 9)], bound)


def test_certify_from_too_small_a_slope_tightens_its_bounds_as_the_slope_grows():
    """Started from a slope well below the ball's gradient, ``certify`` measures a steeper one on
    the points it evaluates and tightens the certificates it already gave with it: the values it
    leaves are still true lower bounds of |f| with the true sign."""
    lv, used = _certified_level(0.05)
    truth = _dense(_ball, 4)[::2, ::2, ::2]
    settled = ~lv.known
    assert used > 0.2 and bool(settled.any())
    v, t = lv.values[settled], truth[settled]
    assert torch.equal(v > 0, t > 0) and bool((v.abs() <= t.abs()).all())
    assert bool((v.abs() > 0.9 * used).all())


def test_a_level_evaluated_outright_after_a_certified_one_starts_afresh(monkeypatch):
    """A level whose few refined cells are evaluated outright keeps no bounds or slope floor of
    the certified level above it (they belong to another lattice)."""
    seen = []
    close = hi._Level.close

    def spy(self, *args, **kwargs):
        seen.append((self.level, self.bounds is None, self.slope_floor))
        return close(self, *args, **kwargs)

    monkeypatch.setattr(hi._Level, "close", spy)
    small = lambda p: (p - torch.tensor([0.07, -0.11, 0.05])).norm(dim=1) - 0.1
    for share, outright in ((0.0, False), (0.004, True)):
        seen.clear()
        monkeypatch.setattr(hi, "OUTRIGHT_SHARE", share)
        hi.refine_grid(small, np.full(3, -1.0), np.full(3, 1.0), 8, coarse_depth=5, smoothing=False)
        levels = {lvl: (none, floor) for lvl, none, floor in seen if lvl in (6, 7)}
        assert not levels[6][0] and levels[6][1] > 0  # certified
        assert levels[7] == ((True, 0.0) if outright else levels[7]) and (outright or levels[7][1] > 0)


@pytest.mark.parametrize("level", [0.0, 0.25])
def test_loosen_bounds_shrinks_the_settled_values_and_opens_the_uncertain_ones(level):
    """A steeper slope shrinks every bound still standing by the certificates' growth (a point
    whose sign is no longer certain gets the level: its cells straddle, the closure evaluates it);
    points evaluated since keep their exact values; a slope no steeper changes nothing."""
    lv, used = _certified_level(0.3, level=level)
    idx, bound, _, slack, at = lv.bounds
    assert at == level
    before = lv.values.clone()
    lv.loosen_bounds(used)
    assert torch.equal(lv.values, before)
    done = idx[:5]  # evaluated since: exact now
    lv.evaluate_points(done)
    exact = lv.values.clone()
    steeper = 1.6 * used
    lv.loosen_bounds(steeper)
    want = hi.tighten_certificates(bound[5:], idx[5:], slack * (steeper - used))
    got = lv.values.view(-1)[hi._flat_index(idx[5:], 9)]
    assert torch.equal(got, want + level) and bool((want == 0).any()) and bool((want != 0).any())
    assert torch.equal(lv.values.view(-1)[hi._flat_index(done, 9)], exact.view(-1)[hi._flat_index(done, 9)])
    assert lv.bounds[2] == steeper and lv.bounds[0].shape[0] == idx.shape[0] - 5


def test_a_closure_that_finds_a_steeper_slope_loosens_the_bounds(monkeypatch):
    """When new values raise the slope, the closure loosens the settled points' bounds to it
    before it tests the cells again (stale bounds would hide a zero)."""
    lv, used = _certified_level(0.3)
    assert lv.slope_floor == used
    monkeypatch.setattr(lv, "slope_with", lambda idx, slope: 2 * slope)
    seen = []
    loosen = lv.loosen_bounds
    monkeypatch.setattr(lv, "loosen_bounds", lambda slope: (seen.append(slope), loosen(slope)))
    slope = lv.close(0, 0.9)
    assert seen and seen == sorted(seen) and seen[-1] == slope > used and lv.bounds[2] == slope


def test_a_closure_never_measures_a_slope_below_the_certificates():
    """The slope a level's closure works with is at least the one its certificates rest on
    (``slope_floor``, the slope kept with their bounds): fewer evaluated points must not make the
    near-zero test laxer."""
    lv, used = _certified_level(0.3)
    measured = hi.gradient_bound(lv.values, lv.known)
    assert lv.slope_floor == used
    steep = 10 * max(used, measured)
    lv.bounds = lv.bounds[:2] + (steep,) + lv.bounds[3:]
    assert lv.slope_floor == steep and lv.close(0, 0.9) == steep
    lv.bounds = None
    assert lv.slope_floor == 0.0 and lv.close(0, 0.9) >= measured


def test_a_finest_level_with_few_refined_cells_evaluates_all_their_childrens_corners(monkeypatch):
    """Up to OUTRIGHT_SHARE of the cells refined, the finest level evaluates every corner of their
    children instead of certifying them: more points known, the same signs and the same exact
    values where both evaluated."""
    depth = 6
    lo, hi_ = np.full(3, -1.0), np.full(3, 1.0)
    dense = _dense(_ball, depth)
    crossed = hi.straddling_cells(dense[::2, ::2, ::2])
    inside = hi.cell_corners(hi.upsample_cells(crossed))
    runs = {}
    for share in (0.0, 1.0):
        monkeypatch.setattr(hi, "OUTRIGHT_SHARE", share)
        runs[share] = hi.refine_grid(_ball, lo, hi_, depth, coarse_depth=3, smoothing=False)
    (g0, k0, s0), (g1, k1, s1) = runs[0.0], runs[1.0]
    assert not bool(k0[inside].all()) and bool(k1[inside].all())
    assert s1.points_queried > s0.points_queried
    assert torch.equal(g0 > 0, g1 > 0) and torch.equal(g1 > 0, dense > 0)
    both = k0 & k1
    assert torch.equal(g0[both], g1[both]) and torch.equal(g1[k1], dense[k1])


def test_children_corners_are_the_unknown_corners_of_the_cells_children():
    rng = _rng(11)
    for m in (2, 3, 6):
        cells = torch.from_numpy(rng.random((m - 1,) * 3) < 0.3)
        known = torch.from_numpy(rng.random((m,) * 3) < 0.5)
        idx = hi.children_corners(cells, known)
        expect = hi.cell_corners(hi.upsample_cells(cells)) & ~hi.upsample_known(known)
        got = torch.zeros_like(expect)
        got[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        assert idx.shape[0] == int(expect.sum()) and torch.equal(got, expect), m
        flat = hi._flat_index(idx, 2 * m - 1)
        assert torch.equal(flat, flat.sort().values)  # in flat order, each point once


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_extent_below_is_the_index_range_of_the_points_at_or_below_the_level(level):
    rng = _rng(12)
    for shape in ((5, 5, 5), (4, 6, 3), (1, 1, 1)):
        a = _ints(rng, shape, 0, 4)
        a[a > level] += 1  # most points above the level
        ext = hi.extent_below(torch.from_numpy(a), level)
        pts = np.argwhere(a <= level)
        if len(pts) == 0:
            assert ext is None
            continue
        np.testing.assert_array_equal(ext[0], pts.min(axis=0))
        np.testing.assert_array_equal(ext[1], pts.max(axis=0))
    assert hi.extent_below(torch.full((3, 3, 3), level + 1), level) is None
    one = torch.full((4, 5, 6), level + 1)
    one[2, 0, 5] = level  # a tie counts
    lo, hi_ = hi.extent_below(one, level)
    assert lo.tolist() == [2, 0, 5] and hi_.tolist() == [2, 0, 5]


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_upsampled_extent_below_equals_the_extent_of_the_built_finer_lattice(level):
    """The box pass's finest level: the extent of the lower-corner signs with new values at some
    points, counted per plane, equals extent_below of the (2m-1)^3 array built and swept. Sparse
    <= level points, so that replacing one often moves or empties an extreme plane."""
    rng = _rng(21)
    for trial in range(60):
        m = int(rng.integers(2, 8))
        coarse = torch.from_numpy(_ints(rng, (m, m, m), 0, 9)) + level
        coarse[coarse <= level] -= 1.0
        coarse[torch.from_numpy(rng.random((m, m, m)) < 0.8)] = level + 3  # most points above
        n = 2 * m - 1
        flat = torch.from_numpy(rng.choice(n ** 3, size=int(rng.integers(0, n ** 3 // 2 + 1)), replace=False))
        idx = torch.stack([flat // (n * n), flat // n % n, flat % n], dim=1)
        vals = torch.from_numpy(rng.choice([level - 1.0, level, level + 2.0], size=idx.shape[0]).astype(np.float32))
        fine = hi.upsample_signs(coarse.float())
        fine[idx[:, 0], idx[:, 1], idx[:, 2]] = vals
        want = hi.extent_below(fine, level)
        got = hi.upsampled_extent_below(coarse.float(), idx, vals, level)
        if want is None:
            assert got is None, trial
        else:
            assert got is not None and got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist(), trial
    # a coarse point on the last index stands for one fine point along that axis, not two: replacing
    # the fine points it stands for leaves nothing
    m = 4
    coarse = torch.full((m, m, m), level + 1.0)
    coarse[0, m - 1, m - 1] = level
    idx = torch.tensor([[0, 2 * m - 2, 2 * m - 2], [1, 2 * m - 2, 2 * m - 2]])
    assert hi.upsampled_extent_below(coarse, idx, torch.full((2,), level + 1.0), level) is None
    lo, hi_ = hi.upsampled_extent_below(coarse, idx[:1], torch.full((1,), level + 1.0), level)
    assert lo.tolist() == [1, 2 * m - 2, 2 * m - 2] and hi_.tolist() == [1, 2 * m - 2, 2 * m - 2]


def test_occupied_extent_equals_the_restricted_refinement_on_the_whole_finer_lattice(monkeypatch):
    """The box pass reads its finest level's extent from the coarser lattice and the new points
    when few cells are refined: the same extent and the same queries as the restricted
    refinement that builds the finest lattice and sweeps it."""
    from midi_model.meshing import BBOX_MAX, BBOX_MIN

    ball = lambda p: p.norm(dim=1) - 0.3  # noqa: E731
    fields = {  # field -> whether few enough cells are refined at depth 8 for the sparse path
        "ball and a small ball off-centre": (
            lambda p: torch.minimum(ball(p), (p - torch.tensor([0.93, 0.0, -0.2])).norm(dim=1) - 0.02), True),
        "ball": (ball, False),
    }
    for name, (f, sparse) in fields.items():
        calls = []
        real = hi.upsampled_extent_below
        monkeypatch.setattr(hi, "upsampled_extent_below", lambda *a: calls.append(1) or real(*a))
        got, st = hi.occupied_extent(f, BBOX_MIN, BBOX_MAX, 8, coarse_depth=4)
        monkeypatch.undo()
        vals, _, st_full = hi.refine_grid(f, BBOX_MIN, BBOX_MAX, 8, coarse_depth=4, smoothing=False,
                                          restrict=hi._beyond_extent)
        want = hi.extent_below(vals)
        assert calls == ([1] if sparse else []), name
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist(), name
        assert st.per_level == st_full.per_level, name
