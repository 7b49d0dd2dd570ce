"""Scene GLB files read back by ``scene.load_scene_meshes`` (the texture command's input): meshes as
written, node transforms applied, nodes without triangles skipped, unnamed nodes found."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

from midi_model.errors import MIDIInputError
from midi_model.scene import instance_names, load_scene_meshes

SHIFT = np.array([0.5, -0.25, 0.0])


def _scene():
    """A box stored with 36 unshared vertices, a single triangle moved by its node, and a point cloud."""
    box = trimesh.creation.box()
    unshared = trimesh.Trimesh(box.vertices[box.faces].reshape(-1, 3), np.arange(36).reshape(12, 3), process=False)
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    s = trimesh.Scene()
    s.add_geometry(unshared, node_name="box", geom_name="box")
    s.add_geometry(tri, node_name="tri", geom_name="tri", transform=trimesh.transformations.translation_matrix(SHIFT))
    s.add_geometry(trimesh.PointCloud(np.random.default_rng(0).random((10, 3))), node_name="pts", geom_name="pts")
    return s, unshared, tri


def _rewrite_json(raw: bytes, edit) -> bytes:
    """A GLB with its JSON chunk changed by ``edit`` (the binary chunk kept)."""
    length = struct.unpack_from("<I", raw, 12)[0]
    gltf = json.loads(raw[20:20 + length])
    edit(gltf)
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    rest = raw[20 + length:]
    body = struct.pack("<I4s", len(text), b"JSON") + text + rest
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def test_meshes_come_back_as_written_in_world_coordinates(tmp_path):
    s, unshared, tri = _scene()
    path = tmp_path / "s.glb"
    path.write_bytes(s.export(file_type="glb"))
    names, meshes = load_scene_meshes(path)
    assert names == ["box", "tri"]          # the point cloud has no triangles
    # vertices neither merged nor reordered (a texture's uvs follow the file's vertex order)
    np.testing.assert_allclose(meshes[0].vertices, unshared.vertices)
    np.testing.assert_array_equal(meshes[0].faces, unshared.faces)
    # a one-triangle mesh is a mesh; its node's transform is applied
    np.testing.assert_allclose(meshes[1].vertices, tri.vertices + SHIFT)
    np.testing.assert_array_equal(meshes[1].faces, tri.faces)


def test_nodes_without_names_are_found(tmp_path):
    s, _, _ = _scene()

    def drop_names(gltf):
        for node in gltf["nodes"]:
            node.pop("name", None)

    path = tmp_path / "unnamed.glb"
    path.write_bytes(_rewrite_json(s.export(file_type="glb"), drop_names))
    names, meshes = load_scene_meshes(path)
    assert len(names) == 2 == len(set(names))
    assert sorted(len(m.faces) for m in meshes) == [1, 12]


def test_a_file_with_only_points_is_refused(tmp_path):
    s = trimesh.Scene()
    s.add_geometry(trimesh.PointCloud(np.random.default_rng(0).random((10, 3))), node_name="pts")
    path = tmp_path / "pts.glb"
    path.write_bytes(s.export(file_type="glb"))
    with pytest.raises(MIDIInputError, match="holds no triangle mesh"):
        load_scene_meshes(path)


def test_names_that_are_not_strings_are_kept_as_text():
    # 0 is a name, not a missing one
    assert instance_names(3, [0, 1, 0]) == ["0", "1", "0_2"]
