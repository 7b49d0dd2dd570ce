"""UV unwrap with xatlas (PyPI): one atlas per object, vertices split along the seams."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MIDIError


@dataclass
class Unwrapped:
    vertices: np.ndarray   # (V', 3) float64, seam vertices duplicated
    faces: np.ndarray      # (F, 3) int64, same faces and order as the input
    uvs: np.ndarray        # (V', 2) float64 in [0, 1], glTF convention (v = 0 at the image top row)
    source: np.ndarray     # (V',) int64: the input vertex each one came from


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 1024, padding: int = 2,
           max_chart_fraction: float = 1 / 64) -> Unwrapped:
    try:
        import xatlas
    except ImportError:
        raise MIDIError("UV unwrap needs the 'xatlas' package: pip install xatlas") from None
    v = np.ascontiguousarray(vertices, np.float32)
    f = np.ascontiguousarray(faces, np.uint32)
    atlas = xatlas.Atlas()
    atlas.add_mesh(v, f)
    chart = xatlas.ChartOptions()
    chart.max_iterations = 1          # fewer chart-growing passes: much faster, a few more charts
    # bounded chart size: one huge chart (a smooth closed surface) is slow to flatten (a 50k-face
    # sphere: 11 s in one chart, 1.5 s with charts of at most 1/64 of the area)
    tri = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    if area > 0:
        chart.max_chart_area = float(area * max_chart_fraction)
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)       # texels between charts, so bilinear lookups stay in one chart
    pack.bilinear = True
    pack.blockAlign = True            # tighter packing, same speed
    atlas.generate(chart, pack)
    vmap, idx, uv = atlas[0]
    # xatlas keeps face order; its uv origin is the image's first row, which is glTF's convention
    return Unwrapped(np.asarray(vertices, np.float64)[vmap], idx.astype(np.int64), uv.astype(np.float64),
                     vmap.astype(np.int64))
