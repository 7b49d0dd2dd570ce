"""EncodeMultiInstanceCondition: scene IMAGE + instance MASK batch -> MIDI_CONDITIONING."""
from __future__ import annotations

import numpy as np
import torch

from . import host
from ..midi_model.errors import MIDIInputError


def image_to_array(image: torch.Tensor, name: str = "image") -> np.ndarray:
    """ComfyUI IMAGE (B,H,W,C) 0..1 -> one HxWx3 float array (first image of the batch)."""
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise MIDIInputError(f"{name}: expected a ComfyUI IMAGE (B,H,W,3), got {type(image).__name__}"
                                           f"{tuple(image.shape) if hasattr(image, 'shape') else ''}")
    if image.ndim == 4:
        if image.shape[0] > 1:
            host.log.warning("MIDI: %s has a batch of %d images; using the first one", name, image.shape[0])
        image = image[0]
    arr = image.detach().float().cpu().numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def masks_to_array(mask: torch.Tensor, name: str = "masks") -> np.ndarray:
    """ComfyUI MASK (N,H,W) or (H,W) 0..1 -> (N,H,W) bool."""
    if not isinstance(mask, torch.Tensor):
        raise MIDIInputError(f"{name}: expected a ComfyUI MASK batch (N,H,W), got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise MIDIInputError(f"{name}: expected a MASK batch (N,H,W), got shape {tuple(mask.shape)}")
    return mask.detach().float().cpu().numpy() > 0.5


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
            "image": ("IMAGE", {"tooltip": "The scene image (first image of a batch is used)."}),
            "masks": ("MASK", {"tooltip": "One mask per object (N,H,W), same size as the image; e.g. from Segment Scene."}),
            "image_padding": ("BOOLEAN", {"default": False, "tooltip":
                              "Official padding: when objects reach the image border, pad the scene with white "
                              "(1.25x their extent, then square). Helps tight crops."}),
        }}

    def encode(self, midi_model, image, masks, image_padding=False):
        rgb = image_to_array(image, "image")
        m = masks_to_array(masks, "masks")
        pipe = midi_model.prepare("encode")
        with torch.inference_mode():
            cond = pipe.encode(rgb, m, image_padding=bool(image_padding))
        preview = torch.from_numpy(cond.instance_rgb.astype(np.float32) / 255.0).to(host.intermediate_device())
        return (cond, preview)
