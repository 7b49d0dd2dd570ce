"""Mesh clean-up after decoding (midi_model/postprocess.py)."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from midi_model.errors import MIDIInputError
from midi_model.postprocess import cluster_vertices, limit_faces, postprocess, remove_floaters


def _scene_with_floater():
    big = trimesh.creation.icosphere(subdivisions=3)            # 1280 faces
    speck = trimesh.creation.icosphere(subdivisions=0, radius=0.05)  # 20 faces
    speck.apply_translation((3, 0, 0))
    return trimesh.util.concatenate([big, speck]), big


def test_remove_floaters_keeps_main_body_exactly():
    mesh, big = _scene_with_floater()
    out = remove_floaters(mesh, 0.05)
    assert len(out.faces) == len(big.faces) and len(out.vertices) == len(big.vertices)
    np.testing.assert_allclose(out.vertices, big.vertices, atol=1e-6)
    assert len(remove_floaters(mesh, 0.0).faces) == len(mesh.faces)
    assert len(remove_floaters(mesh, 0.01).faces) == len(mesh.faces)   # 20 >= 1% of 1280: kept
    with pytest.raises(MIDIInputError, match="min_fraction"):
        remove_floaters(mesh, 2.0)


def test_limit_faces_cluster_meets_budget_and_keeps_shape():
    sphere = trimesh.creation.icosphere(subdivisions=4)          # 5120 faces, radius 1
    out = limit_faces(sphere, 1000, method="cluster")
    assert 200 < len(out.faces) <= 1000
    r = np.linalg.norm(out.vertices, axis=1)
    assert r.min() > 0.85 and r.max() <= 1.0 + 1e-6
    assert out.faces.max() < len(out.vertices)
    assert limit_faces(sphere, 0) is sphere and limit_faces(sphere, 10**6) is sphere
    with pytest.raises(MIDIInputError, match="max_faces"):
        limit_faces(sphere, -1)


def test_cluster_vertices_drops_collapsed_and_duplicate_faces():
    box = trimesh.creation.box()
    out = cluster_vertices(box, 1)
    assert len(out.faces) == 0
    out = cluster_vertices(box, 64)
    assert len(out.faces) == 12


def test_postprocess_list_keeps_order_and_empty_meshes():
    mesh, big = _scene_with_floater()
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    out = postprocess([mesh, empty], remove_small=True, max_faces=600, method="cluster")
    assert len(out) == 2 and 0 < len(out[0].faces) <= 600 and len(out[1].faces) == 0
