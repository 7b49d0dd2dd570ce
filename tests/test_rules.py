"""Rules that live once in the library and that every front end (CLI, nodes, bench) calls:
dtype names and "auto", stage tables, node names, progress as ``callback(done, total)``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midi_model.dtypes import DTYPE_CHOICES, auto_dtype, resolve_dtype
from midi_model.errors import MIDIInputError
from midi_model.scene import instance_names, unique_names


def test_dtype_names_and_auto():
    assert [resolve_dtype(n, "cpu") for n in ("fp32", "fp16", "bf16")] == [torch.float32, torch.float16,
                                                                          torch.bfloat16]
    assert resolve_dtype("auto", "cpu") == resolve_dtype(None, "cpu") == auto_dtype("cpu") == torch.float32
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    assert resolve_dtype("auto", "cpu", auto=lambda d: torch.bfloat16) == torch.bfloat16  # a host's policy
    with pytest.raises(MIDIInputError, match=r"^dtype 'fp8': use one of auto, fp32, fp16, bf16$"):
        resolve_dtype("fp8", "cpu")
    assert DTYPE_CHOICES == ("auto", "fp32", "fp16", "bf16")


def test_node_loader_uses_the_library_dtype_rule(monkeypatch):
    from comfyui_midi.midi_model.errors import MIDIInputError as PackInputError
    from comfyui_midi.nodes import host, loader

    assert loader.DTYPES == list(DTYPE_CHOICES)
    assert host.auto_dtype(torch.device("cpu")) == auto_dtype("cpu")
    monkeypatch.setattr(host, "find_subfolder", lambda name: "/nonexistent")
    with pytest.raises(PackInputError, match=r"^dtype 'fp8': use one of auto, fp32, fp16, bf16$"):
        loader.LoadMIDIModel().load("x", dtype="fp8")


def test_one_stage_table():
    from comfyui_midi.midi_model import offload, pipeline
    from comfyui_midi.nodes.loader import MIDIModel

    assert offload.STAGES is pipeline.STAGES and MIDIModel.STAGES is pipeline.STAGES
    assert set(pipeline.OOM_HINTS) == set(pipeline.STAGES)
    assert pipeline.STAGES == {"encode": ("image_encoder_1", "image_encoder_2"), "sample": ("transformer",),
                               "decode": ("vae",)}


def test_unique_names():
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a_2", "a_3"]
    # a name given literally keeps it; the repeat takes the next free suffix
    assert unique_names(["a", "a", "a_2"]) == ["a", "a_3", "a_2"]
    assert unique_names(["a_2", "a", "a"]) == ["a_2", "a", "a_3"]
    assert instance_names(3) == ["object_1", "object_2", "object_3"]  # counted from 1, as every message
    assert instance_names(3, ["x", "", "x"]) == ["x", "object_2", "x_2"]
    with pytest.raises(MIDIInputError, match=r"2 names given for 3 meshes"):
        instance_names(3, ["a", "b"])
    # names become node and file names: every run of other characters is one "_"
    assert instance_names(4, ["seg 29", " b/c ", "a  b.glb", "//"]) == ["seg_29", "b_c", "a_b.glb", "object_4"]


def test_labels_name_the_objects_alike_everywhere():
    from midi_model.scene import numbered_labels

    assert numbered_labels("seg", np.array([29, 150])) == ["seg 29", "seg 150"]
    assert instance_names(2, numbered_labels("mask", range(1, 3))) == ["mask_1", "mask_2"]


def test_scene_nodes_are_named_uniquely():
    import trimesh

    from midi_model.scene import build_scene

    box = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    scene = build_scene([box, box.copy(), box.copy()], names=["chair", "chair", "table"])
    assert sorted(scene.graph.nodes_geometry) == ["chair", "chair_2", "table"]


def test_node_names_use_the_library_rule():
    from comfyui_midi.nodes.scene import object_names

    assert object_names("a, a, b/c", 4) == ["a", "a_2", "b_c", "object_4"]
    assert object_names("", 2) == instance_names(2)


def test_sampling_progress_counts_steps_done(golden_pipe, golden):
    from midi_model.sampling import sample

    seen = []
    sample(golden_pipe.transformer, torch.from_numpy(golden["image_embeds_1"]),
           torch.from_numpy(golden["image_embeds_2"]), torch.from_numpy(golden["initial_noise"]), 3, 1.0,
           callback=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_decode_progress_counts_chunks_done(golden_pipe, golden):
    seen = []
    golden_pipe.decode(torch.from_numpy(golden["final_latents"]), octree_depth=3, decoder="dense", chunk=300,
                       callback=lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    assert seen[-1] == (total, total) and all(0 < d <= t == total for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_importing_the_package_and_its_errors_does_not_import_torch():
    """What midi_model/__init__.py and errors.py promise (the CLI's parser does import it)."""
    import subprocess
    import sys

    from conftest import ROOT

    code = "import sys, midi_model, midi_model.errors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
