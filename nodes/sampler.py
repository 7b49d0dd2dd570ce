"""MIDISampler: MIDI_CONDITIONING -> MIDI_LATENTS (rectified-flow Euler with CFG)."""
from __future__ import annotations

import torch

from . import host
from ..midi_model import memory


class MIDISampler:
    DESCRIPTION = ("Generates the 3D latents of all objects together with MIDI's multi-instance diffusion "
                   "(the objects attend to each other, so they come out correctly placed). One progress step per "
                   "denoising step; Cancel stops after the current step. The output also holds every object's trajectory, "
                   "so MIDI Re-roll Objects can keep some objects and sample others again.")
    CATEGORY = "MIDI"
    FUNCTION = "sample"
    RETURN_TYPES = ("MIDI_LATENTS",)
    RETURN_NAMES = ("latents",)
    OUTPUT_TOOLTIPS = ("Shape latents, one set per object, for Decode To Meshes.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "midi_model": ("MIDI_MODEL", {"tooltip": "From Load MIDI Model."}),
            "conditioning": ("MIDI_CONDITIONING", {"tooltip": "From Encode Multi-Instance Condition."}),
            "seed": ("INT", {"default": 42, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Seed of the initial noise (CPU generator: the same seed gives the same scene "
                                        "on every machine)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 500, "tooltip":
                              "Denoising steps (official: 50; 25-35 is often enough)."}),
            "guidance": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                                   "Classifier-free guidance scale (official: 7.0). 1.0 or less turns CFG off (2x faster)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def sample(self, midi_model, conditioning, seed, steps, guidance, unique_id=None):
        need = memory.sample_bytes(midi_model.pipe, conditioning.num_instances, float(guidance))
        pipe = midi_model.prepare("sample", need)
        bar = host.Progress(steps, node_id=unique_id)
        with torch.inference_mode():
            rec = pipe.sample_recorded(conditioning, seed=int(seed), steps=int(steps),
                                       guidance_scale=float(guidance), callback=bar.callback())
        return (latents_output(rec),)


def latents_output(rec) -> dict:
    """MIDI_LATENTS: the final latents plus the run's recorded trajectory (every object's latents
    at every step, on the CPU: objects x (steps+1) x 2048 x 64 float32 = 26.7 MB per object at 50
    steps), which MIDI Re-roll Objects keeps objects on."""
    lat = rec.final
    return {"samples": lat.to(host.intermediate_device()), "num_instances": int(lat.shape[0]),
            "seed": int(rec.seed), "steps": int(rec.settings["steps"]), "guidance": float(rec.settings["guidance"]),
            "recording": rec}
