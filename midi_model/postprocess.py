"""Simple mesh clean-up after decoding: drop floaters, cap the face count.

Pure trimesh + numpy (no compiled extras). ``limit_faces`` uses quadric decimation when
trimesh's optional ``fast_simplification`` backend is installed, else vertex clustering
(grid-based, deterministic, keeps the shape to within one grid cell).
"""
from __future__ import annotations

import numpy as np
import trimesh

from .errors import MIDIInputError


def _mesh(vertices, faces) -> trimesh.Trimesh:
    return trimesh.Trimesh(np.asarray(vertices, np.float32).reshape(-1, 3),
                           np.asarray(faces, np.int64).reshape(-1, 3), process=False)


def component_labels(mesh: trimesh.Trimesh) -> np.ndarray:
    """Per-face label of its edge-connected component (0..K-1)."""
    n = len(mesh.faces)
    if n == 0:
        return np.zeros(0, np.int64)
    return np.asarray(trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=n), np.int64)


def remove_floaters(mesh: trimesh.Trimesh, min_fraction: float = 0.05) -> trimesh.Trimesh:
    """Keep the connected components with at least ``min_fraction`` of the largest one's faces.

    ``min_fraction`` 1.0 keeps only the largest component; 0 keeps everything.
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise MIDIInputError(f"min_fraction {min_fraction}: use a value between 0 and 1")
    if len(mesh.faces) == 0 or min_fraction <= 0:
        return mesh
    labels = component_labels(mesh)
    sizes = np.bincount(labels)
    keep_labels = np.nonzero(sizes >= min_fraction * sizes.max())[0]
    keep = np.isin(labels, keep_labels)
    if keep.all():
        return mesh
    return _compact(mesh.vertices, mesh.faces[keep])


def _compact(vertices, faces) -> trimesh.Trimesh:
    """Drop vertices no face uses (order kept)."""
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return _mesh(np.asarray(vertices)[used], remap[faces])


def cluster_vertices(mesh: trimesh.Trimesh, cells: int) -> trimesh.Trimesh:
    """Vertex clustering on a cells^3 grid over the bounding box: one vertex (the mean) per
    occupied cell; faces that collapse or repeat are dropped."""
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    lo, hi = v.min(0), v.max(0)
    size = np.maximum(hi - lo, 1e-12)
    idx = np.minimum(((v - lo) / size * cells).astype(np.int64), cells - 1)
    key = (idx[:, 0] * cells + idx[:, 1]) * cells + idx[:, 2]
    uniq, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(uniq), 3))
    np.add.at(sums, inverse, v)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    nv = sums / counts
    nf = inverse[f]
    ok = (nf[:, 0] != nf[:, 1]) & (nf[:, 1] != nf[:, 2]) & (nf[:, 0] != nf[:, 2])
    nf = nf[ok]
    if len(nf):
        _, first = np.unique(np.sort(nf, axis=1), axis=0, return_index=True)
        nf = nf[np.sort(first)]
    return _compact(nv, nf)


def limit_faces(mesh: trimesh.Trimesh, max_faces: int, method: str = "auto") -> trimesh.Trimesh:
    """At most ``max_faces`` faces (0 = no limit). method: auto (quadric if available) | cluster."""
    if max_faces < 0:
        raise MIDIInputError(f"max_faces {max_faces}: use 0 (no limit) or a positive face count")
    if max_faces == 0 or len(mesh.faces) <= max_faces:
        return mesh
    if max_faces < 4:
        raise MIDIInputError(f"max_faces {max_faces}: too few faces for a closed surface; use 0 or at least 4")
    if method == "auto":
        try:
            import fast_simplification  # noqa: F401  (trimesh's quadric backend)
            out = mesh.simplify_quadric_decimation(face_count=max_faces)
            if 0 < len(out.faces) <= max_faces:
                return _mesh(out.vertices, out.faces)
        except Exception:
            pass
    elif method != "cluster":
        raise MIDIInputError(f"method {method!r}: use auto or cluster")
    # the largest grid whose clustering fits the budget (face count grows with the grid)
    lo_cells, hi_cells = 1, 2
    best = None
    while True:
        out = cluster_vertices(mesh, hi_cells)
        if len(out.faces) > max_faces or hi_cells >= 4096:
            break
        best, lo_cells = out, hi_cells
        hi_cells *= 2
    while hi_cells - lo_cells > 1:
        mid = (lo_cells + hi_cells) // 2
        out = cluster_vertices(mesh, mid)
        if len(out.faces) <= max_faces:
            best, lo_cells = out, mid
        else:
            hi_cells = mid
    return best if best is not None else _mesh(np.zeros((0, 3)), np.zeros((0, 3)))


def postprocess(meshes, remove_small: bool = False, min_fraction: float = 0.05, max_faces: int = 0,
                method: str = "auto") -> list[trimesh.Trimesh]:
    """Apply the clean-up to every mesh of a scene (same order, empty meshes pass through)."""
    out = []
    for m in meshes:
        if remove_small:
            m = remove_floaters(m, min_fraction)
        if max_faces:
            m = limit_faces(m, max_faces, method)
        out.append(m)
    return out
