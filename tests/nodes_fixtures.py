"""Fixtures for the ComfyUI node and workflow tests (imported by tests/test_nodes*.py, test_workflows*.py).

The nodes run without ComfyUI through nodes/host.py's fallbacks: models/ and output/ live in a
temporary folder, ``models/midi/MIDI-3D-tiny`` (and ``MIDI-3D``, the name the workflows ship
with) point at the golden tiny checkpoint.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import GOLDEN, GOLDEN_MODEL, _require

TINY = "MIDI-3D-tiny"


@pytest.fixture(scope="session")
def comfy_dirs(tmp_path_factory):
    from comfyui_midi.nodes import host

    root = tmp_path_factory.mktemp("comfy")
    (root / "models" / "midi").mkdir(parents=True)
    (root / "models" / "loras").mkdir()
    (root / "output").mkdir()
    for name in (TINY, "MIDI-3D"):
        os.symlink(_require(GOLDEN_MODEL), root / "models" / "midi" / name)
    host.set_fallback_dirs(models=str(root / "models"), output=str(root / "output"))
    return root


@pytest.fixture(scope="session")
def golden_arrays():
    return dict(np.load(_require(GOLDEN / "reference_run.npz")))


@pytest.fixture(scope="session")
def scene_image(golden_arrays):
    """The golden scene as a ComfyUI IMAGE (1,256,256,3) float32."""
    return torch.from_numpy(golden_arrays["inputs_rgb"].astype(np.float32) / 255.0)[None]


@pytest.fixture(scope="session")
def seg_image(golden_arrays):
    """The golden seg map as LoadImage gives it: grey -> RGB IMAGE (1,256,256,3)."""
    seg = golden_arrays["inputs_seg"].astype(np.float32) / 255.0
    return torch.from_numpy(np.repeat(seg[..., None], 3, axis=-1))[None]


@pytest.fixture(scope="session")
def midi_model(comfy_dirs):
    from comfyui_midi.nodes.loader import LoadMIDIModel

    (model,) = LoadMIDIModel().load(TINY, "fp32", "sdpa")
    return model


@pytest.fixture()
def progress_log():
    """Records progress updates of the host fallback; clears interrupt state around the test."""
    from comfyui_midi.nodes import host

    log = []
    host.set_progress_hook(lambda v, t, n: log.append((v, t)))
    host.request_interrupt(False)
    yield log
    host.set_progress_hook(None)
    host.request_interrupt(False)


@pytest.fixture(scope="session")
def tiny_segmenters(comfy_dirs):
    """Tiny random SAM (models/sams/sam_tiny.pth) and Grounding DINO (models/grounding-dino/gdino-tiny)."""
    from midi_model.testing import save_tiny_grounding_dino, save_tiny_sam

    (comfy_dirs / "models" / "sams").mkdir(exist_ok=True)
    save_tiny_sam(comfy_dirs / "models" / "sams" / "sam_tiny.pth", seed=0)
    save_tiny_grounding_dino(comfy_dirs / "models" / "grounding-dino" / "gdino-tiny", seed=0)
    return {"sam": "sam_tiny.pth", "dino": "gdino-tiny"}
