"""Meshes -> one scene with a named node per instance, and GLB export (written by ``files``)."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import MIDIInputError
from .files import write_new_bytes


def unique_names(names) -> list[str]:
    """glTF node names must be unique: a repeat gets the first free ``_2``, ``_3``, ...
    (never a name that is given literally elsewhere in the list)."""
    names = [str(n) for n in names]
    literal, taken, out = set(names), set(), []
    for n in names:
        name, k = n, 1
        while name in taken or (name != n and name in literal):
            k += 1
            name = f"{n}_{k}"
        taken.add(name)
        out.append(name)
    return out


def numbered_labels(kind: str, numbers) -> list[str]:
    """Objects' labels from where they came: ``seg 29`` for a seg map's grey value 29, ``mask 2`` for
    the second mask, ``box 1`` ... Segment Scene outputs them, and the CLI and Save MIDI Scene name
    a scene's nodes after them (``instance_names``), so one seg map gives the same names everywhere."""
    return [f"{kind} {int(k)}" for k in numbers]


def safe_name(name) -> str:
    """A label as a node and file name: every run of characters other than letters, digits, ``_``,
    ``.`` and ``-`` becomes one ``_`` (``seg 29`` -> ``seg_29``, ``b/c`` -> ``b_c``)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(name).strip()).strip("_")


def instance_names(count: int, names=None) -> list[str]:
    """One unique name per mesh: ``names[i]`` made safe (``safe_name``), or ``object_<k>`` (k from 1,
    as every message counts objects) where it is missing or empty."""
    if names is None:
        names = [""] * count
    names = [safe_name(n) for n in names]
    if len(names) != count:
        raise MIDIInputError(f"{len(names)} names given for {count} meshes")
    return unique_names(n or f"object_{i}" for i, n in enumerate(names, 1))


def build_scene(meshes, names=None):
    """All instances share the official scene frame ([-1, 1]^3); nothing is moved or scaled."""
    import trimesh

    scene = trimesh.Scene()
    for name, mesh in zip(instance_names(len(meshes), names), meshes):
        scene.add_geometry(mesh, node_name=name, geom_name=name)
    return scene


def glb_bytes(meshes, names=None) -> bytes:
    return build_scene(meshes, names).export(file_type="glb")


def export_glb(meshes, path, names=None) -> Path:
    """Write the scene as a new GLB, whole or not at all; an existing file is never replaced."""
    data = glb_bytes(meshes, names)
    return write_new_bytes(path, data, "scene GLB")


def scene_bytes(scene) -> bytes:
    """A ready trimesh Scene (e.g. textured objects) as GLB bytes, for ``files.write_new_bytes``."""
    return scene.export(file_type="glb")


def load_scene_meshes(path, what: str = "--scene") -> tuple[list[str], list]:
    """A scene GLB -> (node names, meshes in world coordinates) in the file's node order (the order
    ``generate`` writes the instances). Node transforms are applied; nodes without triangles are skipped."""
    import json
    import struct

    import trimesh

    path = Path(path)
    if not path.is_file():
        raise MIDIInputError(f"{what} {path}: no such file")
    raw = path.read_bytes()
    try:
        if raw[:4] != b"glTF":
            raise ValueError("not a binary glTF (.glb) file")
        length, _ = struct.unpack_from("<I4s", raw, 12)
        gltf = json.loads(raw[20:20 + length])
        scene = trimesh.load(path, force="scene", process=False)
    except Exception as e:
        raise MIDIInputError(f"{what} {path}: cannot read it as a GLB scene ({e})") from None
    order = [n.get("name") for n in gltf.get("nodes", []) if "mesh" in n]
    names, meshes = [], []
    for node in order + [n for n in scene.graph.nodes_geometry if n not in order]:
        if node not in scene.graph.nodes_geometry or node in names:
            continue
        transform, geom = scene.graph[node]
        mesh = scene.geometry[geom]
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        m = trimesh.Trimesh(mesh.vertices.copy(), mesh.faces.copy(), process=False)
        m.apply_transform(transform)
        names.append(node)
        meshes.append(m)
    if not meshes:
        raise MIDIInputError(f"{what} {path}: the file holds no triangle mesh")
    return names, meshes
