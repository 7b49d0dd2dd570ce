"""Per-object control: a recorded run and the plan that keeps some of its objects.

A ``Recording`` holds every object's latents before the first step and after each step,
(steps + 1, n, T, C) float32: n x 51 x 2048 x 64 x 4 bytes = 26.7 MB per object at 50 steps
on the released model. A later run keeps objects on it exactly, while the others (re-rolled
or new) are denoised next to them (``sampling.sample(replay=...)``).

A recording also stores a fingerprint of what produced it (per object: the image, its mask
and its crop; the schedule, guidance and model shape), so a run on other inputs is refused
instead of silently mixing two scenes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from .conditioning import MIDIConditioning
from .errors import MIDIInputError
from .scene import safe_name

FORMAT = "midi-trajectory/1"
INFO_KEY = "trajectory_info"
TRAJECTORY_KEY = "trajectory"


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def scene_fingerprint(cond: MIDIConditioning) -> str:
    return _digest(cond.scene_rgb)


def object_fingerprints(cond: MIDIConditioning) -> list[str]:
    """One digest per object of what the encoders saw of it (scene, object on white, mask)."""
    return [_digest(cond.scene_rgb, cond.instance_rgb[k], cond.instance_mask[k]) for k in range(cond.num_instances)]


def run_settings(transformer_config, scheduler_config: dict, steps: int, guidance: float) -> dict:
    """Everything besides the inputs that decides a trajectory (the dtype is not: kept objects
    replay exactly in any dtype)."""
    c = transformer_config
    return {"steps": int(steps), "guidance": float(guidance),
            "shift": float(scheduler_config.get("shift", 1.0)),
            "num_train_timesteps": int(scheduler_config.get("num_train_timesteps", 1000)),
            "model": {"width": int(c.width), "in_channels": int(c.in_channels), "num_layers": int(c.num_layers),
                      "num_attention_heads": int(c.num_attention_heads), "mi_blocks": [int(b) for b in c.mi_blocks]}}


@dataclass
class Recording:
    latents: torch.Tensor  # (steps + 1, n, T, C) float32 CPU: [0] initial, [-1] final
    objects: list  # per object: fingerprint of its inputs
    scene: str  # fingerprint of the scene image
    settings: dict  # run_settings(...)
    seed: int
    object_seeds: dict = field(default_factory=dict)  # object (from 0) -> its own noise seed
    sources: list = field(default_factory=list)  # per object: recorded index it was kept from, None = sampled
    inputs: list = field(default_factory=list)  # per object: its index among the run's inputs
    decode: dict | None = None  # decode settings of meshes stored alongside (CLI dump)

    @property
    def final(self) -> torch.Tensor:
        return self.latents[-1]

    @property
    def num_instances(self) -> int:
        return int(self.latents.shape[1])

    @property
    def steps(self) -> int:
        return int(self.settings["steps"])

    @property
    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size()

    def info(self) -> dict:
        return {"format": FORMAT, "objects": list(self.objects), "scene": self.scene, "settings": self.settings,
                "seed": int(self.seed), "object_seeds": {str(k): int(v) for k, v in self.object_seeds.items()},
                "sources": list(self.sources), "inputs": list(self.inputs), "decode": self.decode}

    def to_arrays(self) -> dict:
        """-> arrays for an .npz: the trajectory and its description (a JSON string, no pickle)."""
        return {TRAJECTORY_KEY: self.latents.numpy(), INFO_KEY: np.array(json.dumps(self.info()))}

    @classmethod
    def from_arrays(cls, arrays, name: str = "recording") -> "Recording":
        if TRAJECTORY_KEY not in arrays or INFO_KEY not in arrays:
            raise MIDIInputError(f"{name}: holds no recorded trajectory: record one with --dump (CLI) "
                                 f"or take the latents of MIDI Sampler")
        info = json.loads(str(arrays[INFO_KEY]))
        if info.get("format") != FORMAT:
            raise MIDIInputError(f"{name}: trajectory format {info.get('format')!r}, this version reads {FORMAT}")
        lat = torch.from_numpy(np.asarray(arrays[TRAJECTORY_KEY], np.float32).copy())
        return cls(lat, info["objects"], info["scene"], info["settings"], int(info["seed"]),
                   {int(k): int(v) for k, v in info["object_seeds"].items()}, info["sources"], info["inputs"],
                   info.get("decode"))

    @classmethod
    def load(cls, path) -> "Recording":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls.from_arrays({k: z[k] for k in (TRAJECTORY_KEY, INFO_KEY) if k in z.files}, str(path))
        except FileNotFoundError:
            raise MIDIInputError(f"{path}: no such file") from None
        except (OSError, ValueError) as e:
            raise MIDIInputError(f"{path}: not a readable .npz ({e})") from None


def parse_objects(spec, n: int, labels=None, what: str = "reroll") -> list[int]:
    """"2", "1,3", "chair" or [2, 3] (numbered from 1, or by label) -> sorted indices from 0.
    A label matches as shown ("seg 29") or as the scene's node name made of it ("seg_29")."""
    if spec is None:
        return []
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    items = [s for s in items if s]
    if isinstance(labels, str):
        labels = [s.strip() for s in labels.split(",")]
    shown = [str(s).strip() for s in (labels or [])]
    labels = [s.lower() for s in shown]
    out = set()
    for s in items:
        if s.lstrip("-").isdigit():
            k = int(s)
            if not 1 <= k <= n:
                raise MIDIInputError(f"{what} {s}: objects are numbered from 1 to {n}")
            out.add(k - 1)
        elif named := [i for i, lab in enumerate(labels) if _names_label(s, lab)]:
            out.update(i for i in named if i < n)
        else:
            listing = ", ".join(f"{i} {safe_name(lab) or lab}" for i, lab in enumerate(shown[:n], 1) if lab)
            known = f" or their names ({listing})" if listing else ""
            raise MIDIInputError(f"{what} {s!r}: give object numbers from 1 to {n}{known}")
    return sorted(out)


def _names_label(item: str, label: str) -> bool:
    """Whether ``item`` names the object labelled ``label`` (lower case): the label itself, or the
    node name made of it (``scene.safe_name``: "seg_29" for "seg 29")."""
    item = item.lower()
    return item == label or ((node := safe_name(item)) != "" and node == safe_name(label))


def plan(recording: Recording, cond: MIDIConditioning, settings: dict, reroll=(), remove=(),
         allow_new: bool = False) -> list:
    """-> per input object: the recorded index it keeps, None if sampled, "removed" if dropped.

    Refuses (one clear error) other settings, another image, recorded objects missing from the
    inputs, and objects not in the recording unless ``allow_new``."""
    rec = recording.settings
    if settings["model"] != rec.get("model"):
        raise MIDIInputError(f"the model ({settings['model']}) differs from the recorded run's ({rec.get('model')}): "
                             f"use the model that recorded it")
    for key in ("steps", "guidance", "shift", "num_train_timesteps"):
        if settings[key] != rec.get(key):
            raise MIDIInputError(f"{key} is {settings[key]} but the recorded run used {rec.get(key)}: "
                                 f"use the recorded {key}")
    if scene_fingerprint(cond) != recording.scene:
        raise MIDIInputError("the image differs from the recorded run's (pixels, size or padding): "
                             "give the recorded run's image and options")
    reroll, remove = set(reroll), set(remove)
    if reroll & remove:
        raise MIDIInputError(f"object(s) {sorted(k + 1 for k in reroll & remove)} are both re-rolled and removed")
    fps = object_fingerprints(cond)
    unused = list(range(len(recording.objects)))
    matched = []
    for fp in fps:
        j = next((j for j in unused if recording.objects[j] == fp), None)
        if j is not None:
            unused.remove(j)
        matched.append(j)
    if unused:
        raise MIDIInputError(f"the recorded object(s) {[j + 1 for j in unused]} are not among the inputs "
                             f"(mask differs): give the recorded masks, and drop objects with remove")
    out = []
    for k, j in enumerate(matched):
        if k in remove:
            out.append("removed")
        elif j is None and k not in reroll and not allow_new:
            raise MIDIInputError(f"object {k + 1} is not in the recording (a new or changed mask): allow new "
                                 f"objects (--add / add_new) to sample it next to the kept ones")
        else:
            out.append(None if (j is None or k in reroll) else j)
    if all(s == "removed" for s in out):
        raise MIDIInputError("every object is removed: keep at least one")
    return out


def select_objects(cond: MIDIConditioning, idx: list) -> MIDIConditioning:
    """The conditioning of objects ``idx`` only (same scene)."""
    def pick(v):
        if isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim and v.shape[0] == cond.num_instances:
            return v[list(idx)]
        return v
    return MIDIConditioning(cond.image_embeds_1[list(idx)], cond.image_embeds_2[list(idx)],
                            cond.instance_rgb[list(idx)], cond.instance_mask[list(idx)], cond.scene_rgb,
                            {k: pick(v) for k, v in cond.extras.items()})
