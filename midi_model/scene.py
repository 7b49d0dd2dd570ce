"""Meshes -> one scene with a named node per instance, and GLB export (written by ``files``)."""
from __future__ import annotations

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


def instance_names(count: int, names=None) -> list[str]:
    """One unique name per mesh: ``names[i]``, or ``object_<i>`` where it is missing or empty."""
    if names is None:
        names = [""] * count
    names = [str(n) for n in names]
    if len(names) != count:
        raise MIDIInputError(f"{len(names)} names given for {count} meshes")
    return unique_names(n or f"object_{i}" for i, n in enumerate(names))


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
