"""The example scenes shipped in example_inputs/ and the Load MIDI Example node that reads them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import EXAMPLES, ROOT, _require
from nodes_fixtures import *  # noqa: F401,F403  (fixtures)

from comfyui_midi import nodes
from comfyui_midi.midi_model.errors import MIDIInputError
from comfyui_midi.nodes.examples import example_names, example_paths

# example -> the MIDI-3D example it was made from (../shared/data/examples, the official files)
SOURCES = {"bedroom": "Realistic-Style/01", "breakfast_room": "BlendSwap/breakfast-room",
           "living_room": "3D-Front/ffd98024-7200-429e-8b9a-1234a5937826_LivingRoom-360"}


def test_examples_are_small_and_keep_their_license():
    assert example_names() == sorted(SOURCES)
    folder = ROOT / "example_inputs"
    assert "Apache License" in (folder / "LICENSE-MIDI-3D").read_text()
    notes = (folder / "README.md").read_text()
    for name in SOURCES:
        assert f"`{name}`" in notes
        for path in example_paths(name):
            assert Image.open(path).size == (512, 512)
            assert (folder / path).stat().st_size < 100_000


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_seg_maps_keep_every_object_of_the_official_example(name):
    """Downscaling kept each object's exact grey value (MIDI's order and noise depend on them)."""
    official = Image.open(_require(EXAMPLES / f"{SOURCES[name]}_seg.png")).convert("L")
    ours = Image.open(example_paths(name)[1]).convert("L")
    assert np.array_equal(np.unique(np.asarray(ours)), np.unique(np.asarray(official)))
    # and nearly the same pixels, at the smaller size
    same = np.asarray(official.resize(ours.size, Image.NEAREST)) == np.asarray(ours)
    assert same.mean() == 1.0


@pytest.mark.parametrize("name,labels", [("bedroom", "seg 29, seg 76, seg 150"),
                                         ("living_room", "seg 29, seg 76, seg 105, seg 150, seg 179, seg 226")])
def test_node_feeds_segment_scene(name, labels, comfy_dirs):
    image, seg = nodes.NODE_CLASS_MAPPINGS["LoadMIDIExample"]().load(name)
    assert image.shape == seg.shape == (1, 512, 512, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    masks, preview, got = nodes.NODE_CLASS_MAPPINGS["SegmentScene"]().segment(image, "label_map", seg_map=seg)
    assert got == labels and masks.shape == (labels.count(",") + 1, 512, 512)


def test_unknown_example_is_one_clear_error():
    with pytest.raises(MIDIInputError, match="example 'attic': use one of bedroom, breakfast_room, living_room"):
        nodes.NODE_CLASS_MAPPINGS["LoadMIDIExample"]().load("attic")
