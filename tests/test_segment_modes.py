"""Segment Scene's mode-dependent widgets: the table the editor extension (web/js/segment_scene_modes.js)
reads from the node definition, and proof that what it hides is really unused in that mode."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT
from nodes_fixtures import *  # noqa: F401,F403  (fixtures)

import comfyui_midi
from comfyui_midi.nodes.segment import MODES, SAM_MODES, WIDGETS_BY_MODE, SegmentScene

ALWAYS = {"mode", "max_instances", "too_many", "allow_more_instances"}


def widget_inputs():
    req = SegmentScene.INPUT_TYPES()["required"]
    return {k for k, v in req.items() if isinstance(v[0], list) or v[0] in ("STRING", "INT", "FLOAT", "BOOLEAN")}


def test_table_covers_every_mode_and_widget():
    assert list(WIDGETS_BY_MODE) == MODES
    dependent = set().union(*WIDGETS_BY_MODE.values())
    assert dependent | ALWAYS == widget_inputs() and not dependent & ALWAYS
    for mode in MODES:  # a mode's models are shown exactly when the mode needs them (as VALIDATE_INPUTS checks)
        assert ("sam_model" in WIDGETS_BY_MODE[mode]) == (mode in SAM_MODES)
        assert ("grounding_dino" in WIDGETS_BY_MODE[mode]) == (mode == "text")


def test_editor_gets_the_table_from_the_node_definition():
    opts = SegmentScene.INPUT_TYPES()["required"]["mode"][1]
    assert json.loads(json.dumps(opts["widgets_by_mode"])) == WIDGETS_BY_MODE   # as /object_info sends it
    js = (ROOT / comfyui_midi.WEB_DIRECTORY / "segment_scene_modes.js").read_text()
    assert 'nodeData?.name !== "SegmentScene"' in js and "mode?.[1]?.widgets_by_mode" in js


UNUSED = dict(prompt="chair", boxes="1,2,3", points="5,5", sam_model="nope.pth", grounding_dino="nope",
              box_threshold=0.99, text_threshold=0.99, min_area=5000.0)


def _run(image, mode, **kw):
    masks, _, labels = SegmentScene().segment(image, mode, **kw)
    return masks.numpy(), labels


def test_hidden_widgets_do_not_change_a_label_map_result(scene_image, seg_image):
    ref = _run(scene_image, "label_map", seg_map=seg_image)
    hidden = {k: v for k, v in UNUSED.items() if k not in WIDGETS_BY_MODE["label_map"]}
    got = _run(scene_image, "label_map", seg_map=seg_image, **hidden)
    assert got[1] == ref[1] and np.array_equal(got[0], ref[0]) and len(ref[1].split(",")) == 3


def test_hidden_widgets_do_not_change_a_boxes_result(scene_image, tiny_segmenters):
    base = dict(boxes="10,10,120,120; 130,130,250,250", sam_model=tiny_segmenters["sam"], min_area=0.0)
    ref = _run(scene_image, "boxes", **base)
    hidden = {k: v for k, v in UNUSED.items() if k not in WIDGETS_BY_MODE["boxes"]}
    got = _run(scene_image, "boxes", **base, **hidden)
    assert got[1] == ref[1] and np.array_equal(got[0], ref[0]) and len(ref[0]) == 2
