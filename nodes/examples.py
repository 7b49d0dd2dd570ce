"""LoadMIDIExample: one of the example scenes shipped in ``example_inputs/`` -> scene IMAGE + seg map IMAGE.

The shipped workflows start from this node, so they run on a fresh install: nothing has to be copied
into ``ComfyUI/input/`` first.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from . import host
from ..midi_model import errors, inputs

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_inputs")
RGB_SUFFIX, SEG_SUFFIX = "_rgb.jpg", "_seg.png"
DEFAULT_EXAMPLE = "bedroom"


def example_names() -> list[str]:
    """Examples that have both files (``<name>_rgb.jpg`` and ``<name>_seg.png``)."""
    if not os.path.isdir(EXAMPLES_DIR):
        return []
    files = set(os.listdir(EXAMPLES_DIR))
    return sorted(f[:-len(RGB_SUFFIX)] for f in files
                  if f.endswith(RGB_SUFFIX) and f[:-len(RGB_SUFFIX)] + SEG_SUFFIX in files)


def example_paths(name: str) -> tuple[str, str]:
    if name not in example_names():
        raise errors.MIDIInputError(f"example '{name}': use one of {', '.join(example_names())}")
    base = os.path.join(EXAMPLES_DIR, name)
    return base + RGB_SUFFIX, base + SEG_SUFFIX


def _to_image(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> ComfyUI IMAGE (1,H,W,3) float32 in 0..1."""
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None].to(host.intermediate_device())


class LoadMIDIExample:
    DESCRIPTION = ("Loads one of the example scenes that come with the pack (from the MIDI-3D repository): the "
                   "picture and its seg map (one colour per object). For your own picture use Load Image instead.")
    CATEGORY = "MIDI"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "seg_map")
    OUTPUT_TOOLTIPS = ("The scene picture (512x512).",
                       "Its seg map, same size: one colour per object, black = background (Segment Scene mode "
                       "label_map).")

    @classmethod
    def INPUT_TYPES(cls):
        names = example_names()
        return {"required": {
            "example": (names, {"default": DEFAULT_EXAMPLE if DEFAULT_EXAMPLE in names else (names or [""])[0],
                                "tooltip": "bedroom: 3 objects (stylised photo). living_room: 6 objects (3D-Front). "
                                           "breakfast_room: 5 objects (BlendSwap)."}),
        }}

    def load(self, example):
        rgb_path, seg_path = example_paths(example)
        rgb = inputs.read_image(rgb_path, "example")
        seg = np.asarray(inputs.open_image(seg_path, "example seg map").convert("RGB"), dtype=np.uint8)
        return (_to_image(rgb), _to_image(seg))
