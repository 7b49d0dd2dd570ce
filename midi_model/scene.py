"""Meshes -> one scene with a named node per instance, and GLB export that never overwrites."""
from __future__ import annotations

from pathlib import Path

from .errors import MIDIInputError


def instance_names(count: int, names=None) -> list[str]:
    if names is None:
        return [f"instance_{i:02d}" for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise MIDIInputError(f"{len(names)} names given for {count} meshes")
    seen, out = {}, []
    for n in names:  # glTF node names should be unique
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def build_scene(meshes, names=None):
    """All instances share the official scene frame ([-1, 1]^3); nothing is moved or scaled."""
    import trimesh

    scene = trimesh.Scene()
    for name, mesh in zip(instance_names(len(meshes), names), meshes):
        scene.add_geometry(mesh, node_name=name, geom_name=name)
    return scene


def export_glb(meshes, path, names=None, overwrite: bool = False) -> Path:
    """Write the scene as GLB; refuses to replace an existing file unless told to."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise MIDIInputError(f"{path} already exists: choose another output name (nothing was overwritten)")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = build_scene(meshes, names).export(file_type="glb")
    # exclusive create: a file that appeared meanwhile is not replaced either
    with open(path, "wb" if overwrite else "xb") as f:
        f.write(data)
    return path
