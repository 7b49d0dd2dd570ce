"""The textured-scene template: converts with our INPUT_TYPES and runs on the golden checkpoint."""
from __future__ import annotations

import trimesh

from nodes_fixtures import *  # noqa: F401,F403  (fixtures)
from test_workflows import TEXTURED_WF, Preview3D, PreviewImage, convert, run_api

from comfyui_midi.nodes import host


def test_textured_workflow_runs_on_golden_checkpoint(comfy_dirs):
    """As shipped (the pack's bedroom example), except the tiny model's CPU speed: 2 steps, octree depth 5,
    128 texels, 96 px views."""
    Preview3D.SHOWN.clear()
    PreviewImage.SHOWN.clear()
    _, api = convert(TEXTURED_WF, comfy_dirs)
    by = {n["class_type"]: n for n in api.values() if n["class_type"] != "PreviewImage"}
    assert by["TextureFromImage"]["inputs"]["texture_size"] == 1024 and by["TextureFromImage"]["inputs"]["frame"] == "midi"
    assert by["RenderViews"]["inputs"]["resolution"] == 768
    assert by["SaveMIDIScene"]["inputs"]["meshes"][0] == [k for k, n in api.items()
                                                          if n["class_type"] == "TextureFromImage"][0]
    by["MIDISampler"]["inputs"]["steps"] = 2
    by["DecodeToMeshes"]["inputs"]["octree_depth"] = 5
    by["TextureFromImage"]["inputs"]["texture_size"] = 128
    by["RenderViews"]["inputs"]["resolution"] = 96
    host.set_progress_hook(None)
    run_api(api)
    assert len(Preview3D.SHOWN) == 1
    path = comfy_dirs / "output" / Preview3D.SHOWN[0]
    scene = trimesh.load(path, force="scene")
    assert len(scene.geometry) >= 1
    for mesh in scene.geometry.values():
        assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
        assert mesh.visual.material.baseColorTexture.size == (128, 128)
    overlay = [s for s in PreviewImage.SHOWN if s[0] == 1 and s[1:3] != (96, 96)]
    assert overlay, PreviewImage.SHOWN                   # the camera overlay, at the picture's size
    assert (6, 96, 96, 3) in PreviewImage.SHOWN         # the normal views
