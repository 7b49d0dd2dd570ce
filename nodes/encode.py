"""EncodeMultiInstanceCondition: scene IMAGE + instance MASK batch -> MIDI_CONDITIONING."""
from __future__ import annotations

import numpy as np
import torch

from . import host
from ..midi_model import inputs  # the library's input layer: the same checks as the CLI
from ..midi_model import memory


class EncodeMultiInstanceCondition:
    DESCRIPTION = ("Encodes the scene image and one mask per object into MIDI's conditioning (CLIP embedding of "
                   "each object, DINOv2 embedding of object + scene + mask). Objects keep the order of the mask batch.")
    CATEGORY = "MIDI"
    FUNCTION = "encode"
    RETURN_TYPES = ("MIDI_CONDITIONING", "IMAGE")
    RETURN_NAMES = ("conditioning", "instances")
    OUTPUT_TOOLTIPS = ("Per-object image embeddings for MIDI Sampler.",
                       "What the encoders see: each object on white (one image per object).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "midi_model": ("MIDI_MODEL", {"tooltip": "From Load MIDI Model."}),
            "image": ("IMAGE", {"tooltip": "The scene image (one image, not a batch)."}),
            "masks": ("MASK", {"tooltip": "One mask per object (N,H,W), same size as the image; e.g. from Segment Scene."}),
            "image_padding": ("BOOLEAN", {"default": False, "tooltip":
                              "Official padding: when objects reach the image border, pad the scene with white "
                              "(1.25x their extent, then square). Helps tight crops."}),
        }}

    def encode(self, midi_model, image, masks, image_padding=False):
        rgb = inputs.as_rgb_uint8(image, "image")
        m = inputs.prepare_masks(masks, rgb.shape[:2], "masks")
        pipe = midi_model.prepare("encode", memory.encode_bytes(midi_model.pipe, num_instances=len(m)))
        with torch.inference_mode():
            cond = pipe.encode(rgb, m, image_padding=bool(image_padding))
        preview = torch.from_numpy(cond.instance_rgb.astype(np.float32) / 255.0).to(host.intermediate_device())
        return (cond, preview)
