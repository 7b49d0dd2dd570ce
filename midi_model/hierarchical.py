"""Coarse-to-fine evaluation of a field on the official (2^d+1)^3 grid.

The official decode queries every point of a 257^3 grid (twice with the progressive
box). Marching cubes only emits triangles in cells whose corner values straddle the
level, and the 3x3x3 box smoothing only reaches one voxel further, so the exact values
are needed in a thin shell around the surface. This module finds that shell from the
top down:

1. evaluate the whole lattice at ``coarse_depth`` (every 2^(d-c)-th point);
2. at each level, flag the cells that straddle 0 (and those within ``band`` of them)
   and the cells that may hide a zero between their corners: a cell whose corners are
   all farther from 0 than ``margin`` x G x h, with G the largest finite-difference
   gradient seen at that level and h the cell size, holds no zero if |grad f| <= G
   inside it (every point of a cell is within 0.87 h of a corner, so margin >= 0.87
   suffices); evaluate the corners of every flagged cell, repeat until no new cell
   gets flagged (a surface leaving the refined region, a thin part);
3. go one level finer inside the flagged cells; everywhere else the values are the
   trilinear interpolation of the coarser level, which keeps the strict sign of those
   cells (at the finest level, where nothing reads them but their sign, the value of the
   cell's lower corner);
4. inside the flagged cells a new point is evaluated only when its cell's corners do not
   settle its sign: a corner q settles a point at distance d when |f(q)| > slack x G x d
   (the same assumption; slack = margin / 0.866 makes it the cell test at a cell centre).
   The others get a value of that sign whose magnitude, |f(q)| - slack x G x d, is a lower
   bound of |f| there. Above the finest level the next tests read these values, so a
   point is left only when its bound also keeps it out of the near-zero test (> margin x
   G), and a steeper G measured later shrinks the bounds (a point whose sign is then no
   longer certain gets the level itself, so the closure evaluates it); that level's G
   never drops below the one the certificates used. At the finest level only signs
   matter away from the surface, so any settled point is left. There the corners of
   every cell that straddles 0 are then evaluated (repeating while new values reveal
   more), and, when smoothing follows, the raw values the 3x3x3 mean reads around every
   cell whose smoothed corners may straddle 0 (a point's smoothed sign is certain when
   its neighbourhood is one-signed, or when the known part of the sum decides it
   whatever the unknown same-signed values are).

The returned grid equals the dense grid (bit for bit, when ``query`` is deterministic
per point) at every point the (smoothed) marching cubes reads in a crossing cell and
has the dense sign elsewhere, so the mesh is the dense mesh, provided the field's
gradient inside an unrefined cell does not exceed the largest one measured on the
lattice at that level. That is an estimate, not a bound the field gives: a spike
steeper than anything the lattice saw can still hide. Raise ``margin`` (or lower
``coarse_depth``) for such fields; ``margin=None`` turns the test off.

Everything operates on a generic ``query(points (P,3) float32 tensor) -> (P,)`` so it
can be checked on analytic fields; the grid points are exactly ``meshing.grid_points``.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch

# The whole lattice is evaluated at depth 4 (17^3 points): with the certificates on every level,
# starting coarser than 5 leaves the same meshes with fewer points (the golden objects at depth 8:
# 4 % fewer; the test fields too), while at 3 the slope measured on 9^3 points refines more later.
DEFAULT_COARSE_DEPTH = 4
DEFAULT_BAND = 0
DEFAULT_MARGIN = 0.9
# When at most this share of a level's cells is refined (a box pass: beyond the extent only), all
# their children's corners are evaluated: a few thousand queries cost less than the certificates'
# sweeps over the lattice (2048 cells at depth 8).
OUTRIGHT_SHARE = 1 / 1024


@dataclass
class RefineStats:
    depth: int
    dense_points: int
    points_queried: int = 0
    per_level: dict = field(default_factory=dict)  # depth -> points queried there
    closure_rounds: int = 0

    @property
    def fraction(self) -> float:
        return self.points_queried / self.dense_points

    def as_dict(self) -> dict:
        return {"depth": self.depth, "dense_points": self.dense_points, "points_queried": self.points_queried,
                "fraction": self.fraction, "per_level": dict(self.per_level),
                "closure_rounds": self.closure_rounds}


# ---- masks and comparisons, through numpy on the CPU ----------------------------------

# torch's CPU nonzero makes two passes over the whole mask (~30 ms at 257^3 whatever it finds),
# numpy's skips empty stretches a word at a time: 2-4x faster on the sparse masks the levels
# make (shells around a surface). Masks denser than this share stay with torch.
SPARSE_SHARE = 1 / 20


def mask_points(mask: torch.Tensor) -> torch.Tensor:
    """``mask.nonzero()``: the (k,3) int64 indices of the True points, in flat order."""
    if mask.device.type != "cpu" or mask.numel() < 1 << 18:
        return mask.nonzero()
    flat = mask.numpy().reshape(-1)
    if np.count_nonzero(flat) > flat.size * SPARSE_SHARE:
        return mask.nonzero()
    f = torch.from_numpy(np.flatnonzero(flat)).double()
    # index -> coordinates in float64: exact (a quotient of integers below 2^53 rounds to the
    # integer itself or stays 1/(n*n) away from the next one), and vectorised, unlike int64 division
    _, n1, n2 = mask.shape
    out = torch.empty((f.shape[0], 3), dtype=torch.float64)
    torch.div(f, n1 * n2, out=out[:, 0]).floor_()
    f.sub_(out[:, 0] * (n1 * n2))
    torch.div(f, n2, out=out[:, 1]).floor_()
    torch.sub(f, out[:, 1] * n2, out=out[:, 2])
    return out.long()


_COMPARE = {"<=": (operator.le, np.less_equal), ">=": (operator.ge, np.greater_equal),
            ">": (operator.gt, np.greater)}


def compare(a: torch.Tensor, op: str, level: float) -> torch.Tensor:
    """``a <= level`` (op "<="), ``a >= level`` or ``a > level`` as a bool tensor. On the CPU
    numpy's vectorised comparison, about twice as fast as torch's on the lattices here."""
    torch_op, numpy_op = _COMPARE[op]
    if a.device.type != "cpu" or a.numel() < 1 << 16:
        return torch_op(a, level)
    x = a.numpy()
    return torch.from_numpy(numpy_op(x, np.asarray(level, dtype=x.dtype)))  # level in a's dtype, as torch


# ---- separable morphology on (m,m,m) arrays -------------------------------------------

def _along(x: torch.Tensor, axis: int, start: int, stop: int | None) -> torch.Tensor:
    idx = [slice(None)] * 3
    idx[axis] = slice(start, stop)
    return x[tuple(idx)]


def straddling_cells(a: torch.Tensor, level: float = 0.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Cells with a corner <= level and a corner >= level: the only cells where
    marching cubes can put a triangle (ties count, to stay on the safe side).
    ``out``: a bool array of the cells' shape to write them into."""
    return torch.logical_and(cell_any(compare(a, "<=", level)), cell_any(compare(a, ">=", level)), out=out)


def dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    """Binary dilation by a (2r+1)^3 cube, separably."""
    if r <= 0:
        return mask
    out = mask
    for ax in range(3):
        src = out
        out = src.clone()
        for s in range(1, r + 1):
            _along(out, ax, s, None).logical_or_(_along(src, ax, 0, -s))
            _along(out, ax, 0, -s).logical_or_(_along(src, ax, s, None))
    return out


def cell_corners(cells: torch.Tensor, axes=(0, 1, 2)) -> torch.Tensor:
    """cell mask (n,n,n) -> mask of their corner points (n+1,n+1,n+1); with ``axes``, the
    corners along those axes only (size n+1 along them, n along the others)."""
    out = cells
    for ax in axes:
        shape = list(out.shape)
        shape[ax] += 1
        nxt = torch.zeros(shape, dtype=torch.bool, device=out.device)
        _along(nxt, ax, 0, -1).logical_or_(out)
        _along(nxt, ax, 1, None).logical_or_(out)
        out = nxt
    return out


def upsample_points(a: torch.Tensor) -> torch.Tensor:
    """(m,m,m) lattice values -> (2m-1)^3: even points copied, odd ones the mean of their
    two neighbours along each axis in turn (trilinear interpolation at midpoints)."""
    m = a.shape[0]
    out = torch.empty((2 * m - 1,) * 3, dtype=a.dtype, device=a.device)
    out[::2, ::2, ::2] = a
    # along x on the even y, z rows, then along y on the even z rows, then along z everywhere
    out[1::2, ::2, ::2] = (out[:-1:2, ::2, ::2] + out[2::2, ::2, ::2]) * 0.5
    out[:, 1::2, ::2] = (out[:, :-1:2, ::2] + out[:, 2::2, ::2]) * 0.5
    out[:, :, 1::2] = (out[:, :, :-1:2] + out[:, :, 2::2]) * 0.5
    return out


def upsample_signs(a: torch.Tensor) -> torch.Tensor:
    """(m,m,m) lattice values -> (2m-1)^3 with each point's value taken from its lower coarse
    corner: the sign of the interpolation wherever the coarse cell's corners agree, which is
    all the finest level keeps of a point it does not evaluate or settle."""
    m = a.shape[0]
    out = torch.empty((2 * m - 1,) * 3, dtype=a.dtype, device=a.device)
    out[::2, ::2, ::2] = a
    out[1::2, ::2, ::2] = out[:-1:2, ::2, ::2]
    out[:, 1::2, ::2] = out[:, :-1:2, ::2]
    out[:, :, 1::2] = out[:, :, :-1:2]
    return out


def upsample_known(k: torch.Tensor) -> torch.Tensor:
    m = k.shape[0]
    out = torch.zeros((2 * m - 1,) * 3, dtype=torch.bool, device=k.device)
    out[::2, ::2, ::2] = k
    return out


def upsample_cells(c: torch.Tensor) -> torch.Tensor:
    """each cell -> its 8 children."""
    for ax in range(3):
        c = c.repeat_interleave(2, dim=ax)
    return c


# ---- the refinement -------------------------------------------------------------------

def near_zero_cells(a: torch.Tensor, threshold: float, level: float = 0.0) -> torch.Tensor:
    """Cells with a corner within ``threshold`` of the level: where a zero of the field
    may hide between the corners (all cells, when the threshold is inf)."""
    d = (a - level).abs()
    for ax in range(3):
        d = torch.minimum(_along(d, ax, 0, -1), _along(d, ax, 1, None))
    return compare(d, "<=", threshold)


def gradient_bound(values: torch.Tensor, known: torch.Tensor) -> float:
    """Largest finite-difference gradient norm, in field units per lattice step, over the
    points whose +x, +y and +z neighbours are evaluated too (exact for a linear field
    in any direction, unlike a per-axis difference)."""
    ok = known[:-1, :-1, :-1] & known[1:, :-1, :-1]
    ok &= known[:-1, 1:, :-1]
    ok &= known[:-1, :-1, 1:]
    # the stencils at the evaluated points only: a few % of a fine lattice
    return _stencil_max(values, _flat_index(mask_points(ok), values.shape[0]))


def _stencil_max(values: torch.Tensor, base: torch.Tensor) -> float:
    """max over the flat indices ``base`` of |(f(+x) - f, f(+y) - f, f(+z) - f)| (0 if none)."""
    if base.shape[0] == 0:
        return 0.0
    m = values.shape[0]
    vf = values.reshape(-1)
    v0 = torch.take(vf, base)
    d = torch.take(vf, base + m * m) - v0
    g2 = d * d
    for step in (m, 1):
        d = torch.take(vf, base + step) - v0
        g2.addcmul_(d, d)
    return float(g2.max().sqrt())


def certified_points(values: torch.Tensor, known: torch.Tensor, idx: torch.Tensor, slope: float,
                     slack: float) -> torch.Tensor:
    """Signs of new points of the next-finer lattice that the known points of this lattice
    decide: a new point at distance d (in fine steps) from a known corner q of its cell has
    the sign of q when |v(q)| > slack x slope x d, slope being the largest gradient in field
    units per fine step (the same assumption as the cell test). A new point with k odd
    coordinates sits at the centre of an edge, face or cell of this lattice: its corners are
    the 2^k lattice points around it, all at d = sqrt(k).

    values, known (m,m,m) on this lattice, idx (P,3) points of the finer one (2m-1)^3 ->
    (P,) a lower bound of |f| with the certain sign, 0 where the sign is not certain
    (corners that disagree settle nothing; points of this lattice, k = 0, are left 0)."""
    odd = idx % 2
    parity = odd[:, 0] * 4 + odd[:, 1] * 2 + odd[:, 2]
    lo = _flat_index(idx // 2, values.shape[0])
    sure = torch.zeros(idx.shape[0], dtype=values.dtype, device=values.device)
    for par, tables in _corner_tables(values, known):
        sel = parity == par[0] * 4 + par[1] * 2 + par[2]
        sure[sel] = _settled(tables, lo[sel], par, slope, slack)
    return sure


def few_cells(cells: torch.Tensor) -> bool:
    """Whether so few cells are refined (``OUTRIGHT_SHARE``) that evaluating every corner of their
    children costs less than certifying them."""
    return int(cells.sum()) <= cells.numel() * OUTRIGHT_SHARE


def children_corners(cells: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The points of the next-finer lattice that are corners of the children of ``cells``
    ((m-1)^3 on this lattice) and not known on it, from the list of cells (for a few cells:
    no (2m-1)^3 mask). -> idx (P,3) on the finer lattice, in flat order."""
    m = known.shape[0]
    n = 2 * m - 1
    corners = (cells.nonzero()[:, None, :] * 2 + _CHILD_CORNERS.to(cells.device)).reshape(-1, 3)
    flat = torch.unique(_flat_index(corners, n))
    idx = torch.stack([flat // (n * n), flat // n % n, flat % n], dim=1)
    even = (idx % 2 == 0).all(dim=1)
    coarse = idx[even] // 2
    drop = torch.zeros_like(even)
    drop[even] = known[coarse[:, 0], coarse[:, 1], coarse[:, 2]]
    return idx[~drop]


_CHILD_CORNERS = torch.tensor([(i, j, k) for i in range(3) for j in range(3) for k in range(3)])


def certified_children(values: torch.Tensor, known: torch.Tensor, cells: torch.Tensor, slope: float,
                       slack: float):
    """``certified_points`` for the points of the next-finer lattice that are corners of the
    children of ``cells`` ((m-1)^3 on this lattice) and not known on it, taken one parity at a
    time on this lattice's arrays (no (2m-1)^3 mask, no index arithmetic per point).
    -> (idx (P,3) on the finer lattice, bound (P,)); points of this lattice come first (bound 0)."""
    m = values.shape[0]
    even = mask_points(cell_corners(cells) & ~known)
    idxs, sures = [even * 2], [torch.zeros(even.shape[0], dtype=values.dtype, device=values.device)]
    for par, tables in _corner_tables(values, known):
        # a finer point with these odd axes lies inside the cell below it along an odd axis and
        # on the face between two cells along an even one: the corners along the even axes only
        sub = mask_points(cell_corners(cells, axes=[a for a in range(3) if not par[a]]))
        idxs.append(sub * 2 + torch.as_tensor(par, device=sub.device))
        sures.append(_settled(tables, _flat_index(sub, m), par, slope, slack))
    return torch.cat(idxs), torch.cat(sures)


def _corner_tables(values: torch.Tensor, known: torch.Tensor):
    """-> (parity, [largest positive, largest |negative|] known value over the 2^k corners of
    the edge, face or cell starting at each lattice point) for the 7 parities with an odd
    axis. If the largest value of a sign passes a threshold, the corner that passes and the
    largest one give the same bound, so these maxima are all a certificate needs."""
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    tables = {(0, 0, 0): [torch.where(known & (values > 0), values, zero),
                          torch.where(known & (values < 0), -values, zero)]}
    for par, (parent, axis) in _PARITY_PARENTS.items():  # each from one with an odd axis fewer
        tables[par] = [_max_with_next(t, axis) for t in tables[parent]]
        if _LAST_CHILD.get(parent) == par:
            del tables[parent]  # no later parity builds on it: free its memory
        yield par, tables[par]
        if par not in _LAST_CHILD:
            del tables[par]


def _settled(tables, lo: torch.Tensor, par, slope: float, slack: float) -> torch.Tensor:
    """The certificate of points of one parity from their corners' maxima at flat indices lo."""
    pos, neg = (t.reshape(-1)[lo] for t in tables)
    zero = torch.zeros((), dtype=pos.dtype, device=pos.device)
    thr = slack * slope * torch.tensor(float(sum(par)), dtype=pos.dtype, device=pos.device).sqrt()
    pos = torch.where(pos > thr, pos, zero)
    neg = torch.where(neg > thr, neg, zero)
    return torch.where(neg == 0, (pos - thr).clamp_(min=0), torch.where(pos == 0, thr - neg, zero))


def _max_with_next(t: torch.Tensor, axis: int) -> torch.Tensor:
    """t (m,m,m) -> the max of each point and its +1 neighbour along axis (last slice: 0, never read)."""
    out = torch.zeros_like(t)
    torch.maximum(_along(t, axis, 0, -1), _along(t, axis, 1, None), out=_along(out, axis, 0, -1))
    return out


def tighten_certificates(sure: torch.Tensor, idx: torch.Tensor, extra: float) -> torch.Tensor:
    """``certified_points``' result for a slope larger by extra / slack: a settled point keeps
    its sign while its bound exceeds the threshold's growth, extra x sqrt(k) (corners of the
    other sign stay below the higher threshold). A point left unsettled because its corners
    disagreed stays so, though the higher threshold might settle it: the safe side."""
    grow = extra * _corner_distance(idx, sure.dtype)
    mag = sure.abs() - grow
    return torch.where(mag > 0, torch.sign(sure) * mag, 0.0)


_PARITIES = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def _parity_parent(par):
    """A parity (odd axes) -> (the same without its last odd axis, that axis)."""
    axis = max(a for a in range(3) if par[a])
    return tuple(0 if a == axis else p for a, p in enumerate(par)), axis


_PARITY_PARENTS = {par: _parity_parent(par) for par in _PARITIES[1:]}  # parents come first in this order
_LAST_CHILD = {parent: par for par, (parent, _) in _PARITY_PARENTS.items()}


def _corner_distance(idx: torch.Tensor, dtype) -> torch.Tensor:
    """Fine-lattice points (P,3) -> distance to the corners of the coarse cell, edge or face
    they sit in, in fine steps: sqrt(number of odd coordinates)."""
    return (idx % 2).sum(dim=1).to(dtype).sqrt()


def _flat_index(idx: torch.Tensor, m: int) -> torch.Tensor:
    """Points (P,3) of an (m,m,m) array -> indices into its flattened view."""
    return (idx[:, 0] * m + idx[:, 1]) * m + idx[:, 2]


def gradient_bound_near(values: torch.Tensor, known: torch.Tensor, idx: torch.Tensor) -> float:
    """``gradient_bound`` over only the base points whose stencil contains one of the points
    ``idx`` (k,3): what evaluating those points can add to the maximum."""
    m = values.shape[0]
    kf = known.reshape(-1)
    steps = (m * m, m, 1)
    flat = _flat_index(idx, m)
    below_last = idx < m - 1  # a base point needs a +1 neighbour on every axis
    best = 0.0
    for back in range(4):  # the new point as the base, or as its +x, +y or +z neighbour
        ok = below_last.clone()
        if back:
            ok[:, back - 1] = idx[:, back - 1] >= 1
        base = flat[ok.all(dim=1)] - (steps[back - 1] if back else 0)
        for st in (0,) + steps:  # keep the stencils whose four points are all evaluated
            base = base[kf[base + st]]
        best = max(best, _stencil_max(values, base))
    return best


def cell_any(mask: torch.Tensor) -> torch.Tensor:
    """point mask (m,m,m) -> cells (m-1)^3 with at least one corner in it."""
    for ax in range(3):
        mask = _along(mask, ax, 0, -1) | _along(mask, ax, 1, None)
    return mask


_OFFSETS = [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]


def smoothed_signs(values: torch.Tensor, known: torch.Tensor, level: float = 0.0):
    """-> (may_be_above, may_be_below): point masks of the signs the 3x3x3 mean (the
    official smoothing, zero padded) may have, given exact values where ``known`` and
    values trusted only for their sign elsewhere. The arrays are (m,m,m) lattices, as
    everywhere in this module (flat offsets assume equal sides).

    A point whose neighbourhood is one-signed has a mean of that sign. For the others
    (a thin shell around the raw surface, gathered sparsely) the mean is surely above
    the level when the known part sums to more than a rounding margin and no unknown
    neighbour is <= level, surely below in the mirror case; otherwise both are possible."""
    above = compare(values, ">", level)
    mixed = cell_corners(cell_any(above) & cell_any(~above))  # a cell holding both signs: its corners
    may_above, may_below = above.clone(), ~above
    idx = mask_points(mixed)
    if idx.shape[0] == 0:
        return may_above, may_below
    sure_above, sure_below = _sure_smoothed_signs(values, known, idx, level)
    flat = _flat_index(idx, values.shape[0])
    may_above.view(-1)[flat] = ~sure_below
    may_below.view(-1)[flat] = ~sure_above
    return may_above, may_below


def _sure_smoothed_signs(values: torch.Tensor, known: torch.Tensor, idx: torch.Tensor, level: float):
    """For the points idx (P,3): (surely above, surely below) the level after the 3x3x3 mean.
    The 27 neighbours are taken one offset at a time for all points (arrays of P, not P x 27),
    by flat offsets into the arrays as they are (no padded copy); a neighbour outside the grid
    is the zero padding: value 0 relative to the level, known."""
    m = values.shape[0]
    vf, kf = values.reshape(-1), known.reshape(-1)
    base = _flat_index(idx, m)
    edge = ((idx == 0) | (idx == m - 1)).any(dim=1).nonzero()[:, 0]  # points with a neighbour outside
    nb = idx[edge, None, :] + torch.tensor(_OFFSETS, device=idx.device)
    outside = ((nb < 0) | (nb >= m)).any(dim=2)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    s = torch.zeros(idx.shape[0], dtype=values.dtype, device=values.device)
    mag = torch.zeros_like(s)
    unk_pos = torch.zeros(idx.shape[0], dtype=torch.bool, device=values.device)
    unk_neg = torch.zeros_like(unk_pos)
    for j, (a, b, c) in enumerate(_OFFSETS):
        f = base + (a * m + b) * m + c
        f[edge] = torch.where(outside[:, j], 0, f[edge])
        v, kn = torch.take(vf, f), torch.take(kf, f)
        if level != 0:
            v = v - level
        v[edge] = torch.where(outside[:, j], zero, v[edge])
        kn[edge] |= outside[:, j]
        kv = torch.where(kn, v, zero)
        s += kv
        mag += kv.abs()
        unknown = ~kn
        unk_pos |= unknown & (v > 0)
        unk_neg |= unknown & (v <= 0)
    tol = 1e-5 * mag  # the sums' rounding: far below this
    none_known = mag == 0
    return ~unk_neg & ((s > tol) | (none_known & unk_pos)), ~unk_pos & ((s < -tol) | none_known)


class _Level:
    """Values (filled) and the known mask on the lattice of one level."""

    def __init__(self, query, axes, depth: int, level: int, stats: RefineStats, chunk: int, progress=None):
        self.query, self.axes, self.depth, self.level = query, axes, depth, level
        self.stats, self.chunk = stats, chunk
        self.first_level, self.progress = level, progress
        self.values: torch.Tensor | None = None
        self.known: torch.Tensor | None = None
        self.bounds = None  # (idx, bound, slope, slack, level) of the points ``certify`` settled above the finest level

    @classmethod
    def coarsest(cls, query, axes, depth: int, level: int, stats: RefineStats, chunk: int, progress=None):
        """The lattice of ``level``, every point evaluated."""
        lv = cls(query, axes, depth, level, stats, chunk, progress)
        m = 2 ** level + 1
        lv.values = torch.zeros((m, m, m), dtype=torch.float32, device=axes[0].device)
        lv.known = torch.zeros((m, m, m), dtype=torch.bool, device=axes[0].device)
        lv.evaluate(torch.ones_like(lv.known))
        return lv

    def refine(self, need: torch.Tensor, slope: float, margin: float | None, level: float = 0.0) -> None:
        """Go one level finer: the values are interpolated (at the finest level, the lower corner's
        sign), then the children of the cells ``need`` are evaluated (every corner when few cells
        or no near-zero test) or certified."""
        coarse_values, coarse_known = self.values, self.known
        # the finest level keeps only signs where it does not evaluate or settle a point
        self.values = upsample_points(self.values) if self.level + 1 < self.depth else upsample_signs(self.values)
        self.known = upsample_known(self.known)
        self.level += 1
        self.bounds = None
        if margin is None:
            self.evaluate(cell_corners(upsample_cells(need)))
        elif few_cells(need):
            self.evaluate_points(children_corners(need, coarse_known))
        else:
            self.certify(need, coarse_values - level, coarse_known, slope / 2, margin, level)

    @property
    def slope_floor(self) -> float:
        """The slope this level's certificates rest on (0 without any): the closure measures no less."""
        return self.bounds[2] if self.bounds is not None else 0.0

    def evaluate(self, mask: torch.Tensor, offset=None):
        """Query the field at the lattice points in mask (a sub-box starting at offset)
        that are not known yet. -> the points added (k,3), or None."""
        sl = tuple(slice(int(o), int(o) + n) for o, n in zip(offset if offset is not None else (0, 0, 0), mask.shape))
        todo = mask & ~self.known[sl]
        idx = mask_points(todo)
        if offset is not None:
            idx = idx + torch.as_tensor(np.asarray(offset), device=idx.device)
        return self.evaluate_points(idx)

    def evaluate_points(self, idx: torch.Tensor, keep_old: bool = True):
        """Query the field at the lattice points idx (k,3), none of them known yet. -> idx, or
        None when it is empty. ``keep_old``: keep the values they replace for ``signs_changed``."""
        if idx.shape[0] == 0:
            return None
        v = self.query_points(idx)
        flat = _flat_index(idx, self.values.shape[0])  # one index per point: cheaper than three
        self.last_old = self.values.view(-1)[flat] if keep_old else None  # interpolated or settled values
        self.values.view(-1)[flat] = v
        self.known.view(-1)[flat] = True
        self.last_added = idx
        return idx

    def query_points(self, idx: torch.Tensor, level: int | None = None) -> torch.Tensor:
        """The field at the points idx (k,3) of this level's lattice (or of ``level``'s), counted
        in the stats and reported to ``progress`` chunk by chunk. -> (k,) float32."""
        level = self.level if level is None else level
        n = int(idx.shape[0])
        if n == 0:
            return torch.zeros(0, device=self.values.device)
        fine = idx * 2 ** (self.depth - level)
        pts = torch.stack([self.axes[0][fine[:, 0]], self.axes[1][fine[:, 1]], self.axes[2][fine[:, 2]]], dim=1)
        vals = []
        for s in range(0, n, self.chunk):
            vals.append(self.query(pts[s:s + self.chunk]).reshape(-1).to(self.values.device, torch.float32))
            if self.progress is not None:  # after every chunk: the host's progress bar and Cancel
                levels = self.depth - self.first_level + 1
                self.progress((level - self.first_level + min(s + self.chunk, n) / n) / levels)
        self.stats.points_queried += n
        self.stats.per_level[level] = self.stats.per_level.get(level, 0) + n
        return torch.cat(vals)

    def flagged_cells(self, band: int, margin: float | None, slope: float, restrict=None, level: float = 0.0,
                      box=None) -> torch.Tensor:
        """Cells whose finer points must be evaluated: those that straddle the level,
        the cells within ``band`` of them, and (``margin``) the cells with a corner
        within margin x slope of the level, where a piece may hide between corners."""
        if box is None:
            box = (np.zeros(3, np.int64), np.full(3, self.values.shape[0], np.int64))
        vals = self.values[tuple(slice(int(a), int(b)) for a, b in zip(*box))]
        need = dilate(straddling_cells(vals, level), band)
        if margin is not None:
            need |= near_zero_cells(vals, margin * slope, level)
        if restrict is not None:
            need &= restrict(self)[tuple(slice(int(a), int(b) - 1) for a, b in zip(*box))]
        return need

    def close(self, band: int, margin: float | None, restrict=None, level: float = 0.0) -> float:
        """Evaluate the corners of every flagged cell until no new cell gets flagged
        (new values can reveal new straddling cells: a surface leaving the refined
        region, a thin part). The slope is re-measured as values come in; when it grows every cell is checked
        again, otherwise only the box around the points just added can change.
        -> the slope of this level."""
        m = self.values.shape[0]
        full = (np.zeros(3, np.int64), np.full(3, m, np.int64))
        box = full
        slope = max(gradient_bound(self.values, self.known), self.slope_floor) if margin is not None else 0.0
        while True:
            need = self.flagged_cells(band, margin, slope, restrict, level, box)
            added = self.evaluate(cell_corners(need), offset=box[0])
            if added is None:
                return slope
            self.stats.closure_rounds += 1
            if margin is None and not self.signs_changed(level):
                return slope  # straddling (and restrict) depend on signs only: nothing new can be flagged
            new_slope = self.slope_with(self.last_added, slope) if margin is not None else slope
            if new_slope > slope:
                slope, box = new_slope, full
                self.loosen_bounds(slope)
            else:
                lo, hi = added.min(dim=0).values.cpu().numpy(), added.max(dim=0).values.cpu().numpy()
                pad = band + 2
                box = (np.maximum(lo - pad, 0), np.minimum(hi + 1 + pad, m))

    def signs_changed(self, level: float = 0.0) -> bool:
        """Whether the last evaluated points have another sign than the values they replaced."""
        new = self.values.view(-1)[_flat_index(self.last_added, self.values.shape[0])]
        return bool((torch.sign(new - level) != torch.sign(self.last_old - level)).any())

    def certify(self, cells: torch.Tensor, coarse_values: torch.Tensor, coarse_known: torch.Tensor,
                slope: float, margin: float, level: float = 0.0) -> float:
        """Evaluate, inside the refined region (the children of ``cells``), just the new points
        whose sign the coarser corners do not settle (``certified_points``); the others get a
        value of their certain sign whose magnitude is a lower bound of |f| there. At the finest
        level only signs and the values marching cubes reads matter, so any settled point is
        left. Above it a settled point must also stay out of the near-zero test (bound above
        margin x slope: it flags no cell), and its bound is kept so that a steeper slope found
        later loosens it (``loosen_bounds``). The slope is re-measured on the new values; if it
        grows, the certificates are tightened with it. -> the slope they rest on."""
        slack = margin / (3 ** 0.5 / 2)  # the cell test's margin as a factor on the slope: equal at a cell centre
        finest = self.level == self.depth
        near = 0.0 if finest else margin
        new, sure = certified_children(coarse_values, coarse_known, cells, slope, slack)
        done = sure.abs() <= near * slope  # the points evaluated so far
        todo = new[done]
        while self.evaluate_points(todo, keep_old=False) is not None:
            new_slope = self.slope_with(todo, slope)
            if new_slope <= slope:
                break
            sure = tighten_certificates(sure, new, slack * (new_slope - slope))
            more = (sure.abs() <= near * new_slope) & ~done
            todo, done = new[more], done | more
            slope = new_slope
        rest = ~done
        self.values.view(-1)[_flat_index(new[rest], self.values.shape[0])] = sure[rest] + level
        if not finest:
            self.bounds = (new[rest], sure[rest], slope, slack, level)
        return slope

    def loosen_bounds(self, slope: float) -> None:
        """The settled points' bounds for a steeper slope: a point whose sign is no longer
        certain gets the level itself (its cells straddle, so the closure evaluates it)."""
        if self.bounds is None or slope <= self.bounds[2]:
            return
        idx, sure, old, slack, level = self.bounds
        flat = _flat_index(idx, self.values.shape[0])
        open_ = ~self.known.view(-1)[flat]  # evaluated since: their values are exact
        idx, flat = idx[open_], flat[open_]
        sure = tighten_certificates(sure[open_], idx, slack * (slope - old))
        self.values.view(-1)[flat] = sure + level
        self.bounds = (idx, sure, slope, slack, level)

    def slope_with(self, idx: torch.Tensor, slope: float) -> float:
        """The slope after evaluating idx: re-measured around those points, or over the whole
        lattice when they are more than about one point in 64 (then one sweep is cheaper than
        gathering the stencils)."""
        if idx.shape[0] * 64 > self.values.numel():
            return max(slope, gradient_bound(self.values, self.known))
        return max(slope, gradient_bound_near(self.values, self.known, idx))

    def close_smoothed(self, level: float = 0.0) -> None:
        """Finest level, smoothing next. First the corners of the cells that straddle the level
        (as ``close``). Then marching cubes reads the smoothed values at the corners of the
        cells whose smoothed corners straddle the level, so evaluate the raw values their
        3x3x3 means read, around every cell that may straddle (a point of unsure smoothed sign
        makes its cells "may straddle"), and the corners of the raw straddling cells again;
        repeat while new values change a sign. (Exact values of the signs they replace only
        add known terms of the sign the bounds already assumed: a sure smoothed sign stays
        sure, so no cell starts to straddle.) A round that changes no sign leaves the raw
        straddling cells as they were, their corners known: the next round skips them."""
        added = self.evaluate(cell_corners(straddling_cells(self.values, level)))
        if added is not None:
            self.stats.closure_rounds += 1
        fresh = added is None or not self.signs_changed(level)
        while True:
            above, below = smoothed_signs(self.values, self.known, level)
            pts = dilate(cell_corners(cell_any(above) & cell_any(below)), 1)
            if not fresh:
                pts |= cell_corners(straddling_cells(self.values, level))
            if self.evaluate(pts) is None:
                return
            self.stats.closure_rounds += 1
            if not self.signs_changed(level):
                return
            fresh = False


def _lattice(bbox_min, bbox_max, depth: int, band: int, margin: float | None, device, stats):
    """Checks the tuning; -> (the grid's axes, one float32 linspace per axis; the stats to fill)."""
    if band < 0:
        raise ValueError("band must be >= 0 cells")
    if margin is not None and margin < 0:
        raise ValueError("margin must be >= 0 (or None)")
    g = 2 ** depth + 1
    axes = [torch.from_numpy(np.linspace(bbox_min[i], bbox_max[i], g, dtype=np.float32)).to(device)
            for i in range(3)]
    return axes, RefineStats(depth=depth, dense_points=g ** 3) if stats is None else stats


def refine_grid(query, bbox_min, bbox_max, depth: int, coarse_depth: int = DEFAULT_COARSE_DEPTH,
                band: int = DEFAULT_BAND, smoothing: bool = True, device="cpu", chunk: int = 50_000,
                level: float = 0.0, restrict=None, stats: RefineStats | None = None,
                margin: float | None = DEFAULT_MARGIN, progress=None):
    """-> (grid (g,g,g) float32, known (g,g,g) bool, RefineStats), g = 2^depth + 1.

    ``grid`` holds the exact field wherever marching cubes (after the 3x3x3 box
    smoothing if ``smoothing``) can emit a triangle, and values of the coarse cell's
    sign elsewhere (see the module docstring for what that rests on).
    ``restrict(level_state) -> cell mask`` optionally limits the refinement (box pass);
    ``margin=None`` turns the near-zero test off (surface tracing only).
    ``progress(fraction)`` is called after every chunk of queries (fraction of the levels, 0..1,
    not always increasing: closing a level can take another round)."""
    axes, stats = _lattice(bbox_min, bbox_max, depth, band, margin, device, stats)
    c = max(0, min(coarse_depth, depth))
    lv = _Level.coarsest(query, axes, depth, c, stats, chunk, progress)
    for lvl in range(c, depth):
        slope = lv.close(band, margin, restrict=restrict, level=level)
        need = lv.flagged_cells(band, margin, slope, restrict, level)
        lv.refine(need, slope, margin, level)
    if smoothing and restrict is None:
        # finest level: the corners of the straddling cells, then what the smoothing reads
        lv.close_smoothed(level)
    elif restrict is None or margin is None:
        # the mesh needs exact values at the corners of the straddling cells
        lv.close(0, None, restrict=restrict, level=level)
    # (a restricted pass with the near-zero test wants signs only, and every point it may
    # need is evaluated or settled by now)
    return lv.values, lv.known, stats


def _beyond_extent(lv: _Level) -> torch.Tensor:
    """The box pass's restriction: the cells that can hold a point beyond the current extent of
    the <= 0 points (all cells when there is none yet)."""
    ext = extent_below(lv.values)
    n = lv.values.shape[0]
    allow = torch.zeros((n - 1,) * 3, dtype=torch.bool, device=lv.values.device)
    if ext is None:
        return ~allow
    ar = torch.arange(n - 1, device=allow.device)
    for ax in range(3):
        lo, hi = int(ext[0][ax]), int(ext[1][ax])
        # a cell c spans lattice points c..c+1: it can hold a point below lo only if c < lo
        sel = (ar < lo) | (ar >= hi)
        shape = [1, 1, 1]
        shape[ax] = n - 1
        allow |= sel.view(shape)
    return allow


def occupied_extent(query, bbox_min, bbox_max, depth: int, coarse_depth: int = DEFAULT_COARSE_DEPTH,
                    band: int = DEFAULT_BAND, device="cpu", chunk: int = 50_000, stats: RefineStats | None = None,
                    margin: float | None = DEFAULT_MARGIN, progress=None):
    """Index range of the grid points with value <= 0 on the (2^d+1)^3 grid, per axis,
    found coarse-to-fine: only cells beyond the current extent of the <= 0 points are
    refined, since only they can move it (a cell restricted out lies inside an extent
    set by evaluated points, so its interpolated values never widen the result). When few
    cells are refined into the finest level (``few_cells``), its extent is counted from the
    coarser lattice and the new points (``upsampled_extent_below``), not swept on the finest.
    -> ((lo_idx (3,), hi_idx (3,)), stats) or (None, stats)."""
    axes, stats = _lattice(bbox_min, bbox_max, depth, band, margin, device, stats)
    lv = _Level.coarsest(query, axes, depth, max(0, min(coarse_depth, depth)), stats, chunk, progress)
    while lv.level < depth:
        slope = lv.close(band, margin, restrict=_beyond_extent)
        need = lv.flagged_cells(band, margin, slope, _beyond_extent)
        if margin is not None and lv.level + 1 == depth and few_cells(need):
            # the finest level's extent from the coarser lattice and the new points alone: no
            # (2m-1)^3 array of lower-corner signs to build and sweep
            idx = children_corners(need, lv.known)
            return upsampled_extent_below(lv.values, idx, lv.query_points(idx, depth)), stats
        lv.refine(need, slope, margin)
    if margin is None:  # surface tracing: the finest level closes over the straddling cells too (as refine_grid)
        lv.close(0, None, restrict=_beyond_extent)
    return extent_below(lv.values), stats


def upsampled_extent_below(coarse: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor, level: float = 0.0):
    """``extent_below`` of ``upsample_signs(coarse)`` with ``vals`` put at its points ``idx`` (k,3),
    from per-plane counts of the <= level points: a fine point p holds coarse[p // 2], so a coarse
    point counts once per fine point it stands for (2 along an axis, 1 at the last index), and
    the replaced points are taken out and put back with their new values."""
    m = coarse.shape[0]
    n = 2 * m - 1
    below = compare(coarse, "<=", level)
    b = below.to(torch.float32)  # counts below 2^24: exact
    w = torch.full((m,), 2.0, device=b.device)
    w[-1] = 1.0
    counts = [torch.einsum("ijk,j,k->i", b, w, w), torch.einsum("ijk,i,k->j", b, w, w),
              torch.einsum("ijk,i,j->k", b, w, w)]
    old = below.view(-1)[_flat_index(idx // 2, m)]
    new = compare(vals, "<=", level)
    lo, hi = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for ax in range(3):
        c = counts[ax].round().long().repeat_interleave(2)[:n]
        c -= torch.bincount(idx[old, ax], minlength=n)
        c += torch.bincount(idx[new, ax], minlength=n)
        rows = (c > 0).nonzero()
        if rows.shape[0] == 0:
            return None
        lo[ax], hi[ax] = int(rows[0, 0]), int(rows[-1, 0])
    return lo, hi


def extent_below(values: torch.Tensor, level: float = 0.0):
    """Index range per axis of the points with value <= level: (lo (3,), hi (3,)), or None.
    (Two sweeps over the array: the x-y plane and the y-z plane of the <= level points.)"""
    below = compare(values, "<=", level)
    xy = below.any(dim=2)
    if not bool(xy.any()):
        return None
    rows = [xy.any(dim=1), xy.any(dim=0), below.any(dim=0).any(dim=0)]
    lo = np.array([int(r.nonzero()[0, 0]) for r in rows])
    hi = np.array([int(r.nonzero()[-1, 0]) for r in rows])
    return lo, hi
