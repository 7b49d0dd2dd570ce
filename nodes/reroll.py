"""MIDIRerollObjects: keep some objects of a recorded MIDI_LATENTS, sample the others again."""
from __future__ import annotations

import torch

from . import host
from ..midi_model import memory, trajectory
from ..midi_model.errors import MIDIInputError
from .sampler import latents_output


class MIDIRerollObjects:
    DESCRIPTION = ("Keeps the objects you like from an earlier run and samples the others again: the kept objects "
                   "follow their recorded denoising exactly (same latents, same meshes, not decoded again), the "
                   "re-rolled or new ones are denoised next to them and attend to them at every step, so they fit "
                   "the scene. Give it the same conditioning as the recorded run (plus new masks with add_new).")
    CATEGORY = "MIDI"
    FUNCTION = "reroll"
    RETURN_TYPES = ("MIDI_LATENTS", "STRING")
    RETURN_NAMES = ("latents", "labels")
    OUTPUT_TOOLTIPS = ("Latents of the new scene (with its own trajectory: chain another re-roll after it).",
                       "The labels of the output's objects (the labels input without removed objects).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "midi_model": ("MIDI_MODEL", {"tooltip": "From Load MIDI Model (the model that recorded the run)."}),
            "conditioning": ("MIDI_CONDITIONING", {"tooltip": "The recorded run's conditioning (same image and "
                                                                "masks; extra masks are new objects with add_new)."}),
            "recorded": ("MIDI_LATENTS", {"tooltip": "From MIDI Sampler (or another re-roll): the run to keep objects from."}),
            "reroll": ("STRING", {"default": "2", "tooltip":
                                  "Objects to sample again, comma separated: numbers from 1 in mask order, or labels "
                                  "(with the labels input). Every other recorded object is kept."}),
            "seed": ("INT", {"default": 7, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Seed of the re-rolled objects' noise (their slice of the official draw)."}),
        }, "optional": {
            "remove": ("STRING", {"default": "", "tooltip": "Objects to drop from the scene (numbers or labels); "
                                                          "the others stay exactly as recorded."}),
            "add_new": ("BOOLEAN", {"default": False, "tooltip": "Sample masks that are not in the recording as new "
                                                               "objects (otherwise they are refused)."}),
            "per_object_seed": ("BOOLEAN", {"default": False, "tooltip": "Each re-rolled object draws its noise from "
                                            "seed alone (seed + 1, + 2 ... for the next ones), whatever the object "
                                            "count or its position, instead of its slice of the scene's draw."}),
            "labels": ("STRING", {"forceInput": True, "tooltip": "Object names in mask order (Segment Scene's labels), "
                                                                 "to name objects in reroll / remove."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def reroll(self, midi_model, conditioning, recorded, reroll, seed, remove="", add_new=False,
               per_object_seed=False, labels=None, unique_id=None):
        rec = recorded.get("recording") if isinstance(recorded, dict) else None
        if not isinstance(rec, trajectory.Recording):
            raise MIDIInputError("recorded: these latents hold no trajectory: connect MIDI Sampler's (or a re-roll's) "
                                 "latents output")
        n = conditioning.num_instances
        names = [s.strip() for s in labels.split(",")] if labels else []
        redo = trajectory.parse_objects(reroll, n, names, what="reroll")
        drop = trajectory.parse_objects(remove, n, names, what="remove")
        need = memory.sample_bytes(midi_model.pipe, n, rec.settings["guidance"])
        pipe = midi_model.prepare("sample", need)
        bar = host.Progress(rec.steps, node_id=unique_id)
        seeds = None
        if per_object_seed:
            kept_inputs = [k for k in range(n) if k not in drop]
            seeds = {kept_inputs.index(k): (int(seed) + j) % 2 ** 64 for j, k in enumerate(redo) if k in kept_inputs}
        with torch.inference_mode():
            out = pipe.resample(conditioning, rec, redo, int(seed), drop, allow_new=bool(add_new),
                                callback=bar.callback(), object_seeds=seeds)
        kept = [k + 1 for k, s in enumerate(out.sources) if s is not None]
        host.log.info("MIDI re-roll: kept objects %s, sampled %s", kept,
                      [k + 1 for k, s in enumerate(out.sources) if s is None])
        out_labels = ", ".join(names[k] for k in out.inputs if k < len(names)) if names else ""
        return (latents_output(out), out_labels)
