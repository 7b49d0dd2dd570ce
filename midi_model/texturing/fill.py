"""Colours for texels no image saw, and a gutter around the charts.

Unseen texels take the colour of the nearest SEEN surface of the same object measured in 3D
(not in UV space), so the fill flows across UV seams as the surface does and never reaches into
another object. Texels outside every chart copy their nearest chart texel, so
bilinear lookups and mipmaps at chart borders do not pull in black.
"""
from __future__ import annotations

import torch


def fill_unseen(colour: torch.Tensor, seen: torch.Tensor, used: torch.Tensor, position: torch.Tensor,
                fallback, grid: int = 96) -> torch.Tensor:
    """colour (T, T, C) valid where ``seen``; fill the other ``used`` texels; ``fallback`` (C,) if none seen.

    The seen colours are averaged into a voxel grid over the object (``grid`` voxels on its longest
    side); every empty voxel takes the colour of the nearest filled one (exact Euclidean distance
    transform), and unseen texels read that grid trilinearly, so the fill is smooth and has no seams."""
    from scipy.ndimage import distance_transform_edt

    out = colour.clone()
    todo = used & ~seen
    if not todo.any():
        return out
    if not seen.any():
        out[todo] = torch.as_tensor(fallback, dtype=out.dtype)
        return out
    P = position.double()
    lo = P[used].amin(0)
    step = float((P[used].amax(0) - lo).max()) / (grid - 1) or 1.0
    dims = (((P[used].amax(0) - lo) / step).floor().long() + 2).tolist()
    ijk = ((P[seen] - lo) / step).round().long()
    for a in range(3):
        ijk[:, a].clamp_(0, dims[a] - 1)
    flat = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    C = colour.shape[-1]
    total = torch.zeros(dims[0] * dims[1] * dims[2], C, dtype=torch.float64).index_add_(0, flat, colour[seen].double())
    count = torch.zeros(len(total), dtype=torch.float64).index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64))
    have = (count > 0).view(*dims).numpy()
    mean = (total / count.clamp_min(1)[:, None]).view(*dims, C)
    _, near = distance_transform_edt(~have, return_indices=True)
    filled = mean[torch.from_numpy(near[0]), torch.from_numpy(near[1]), torch.from_numpy(near[2])]  # (X,Y,Z,C)
    # trilinear lookup: grid_sample wants (N, C, D, H, W) and (x, y, z) = (W, H, D) order in [-1, 1]
    q = (P[todo] - lo) / step
    g = torch.stack([q[:, 2] / (dims[2] - 1), q[:, 1] / (dims[1] - 1), q[:, 0] / (dims[0] - 1)], -1) * 2 - 1
    vol = filled.permute(3, 0, 1, 2)[None].float()
    vals = torch.nn.functional.grid_sample(vol, g.float()[None, None, None], mode="bilinear",
                                           padding_mode="border", align_corners=True)[0, :, 0, 0].T
    out[todo] = vals.to(out.dtype)
    return out


def pad_gutter(colour: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """Texels outside the charts copy the colour of the nearest texel inside one."""
    from scipy.ndimage import distance_transform_edt

    if used.all() or not used.any():
        return colour
    _, (iy, ix) = distance_transform_edt(~used.numpy(), return_indices=True)
    return colour[torch.from_numpy(iy), torch.from_numpy(ix)]
