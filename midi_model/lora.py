"""LoRA adapters for the MIDI transformer: read, checked against the model, then merged into the
weights (:func:`apply_lora`, the library / CLI) or handed to a host as low-rank updates that it
patches in when it loads the model (:func:`load_lora`; ComfyUI's ModelPatcher, so a strength
change needs no reload).

Accepted files (safetensors only):
* a peft adapter: ``adapter_model.safetensors`` (+ ``adapter_config.json`` next to it, or a folder
  holding both); keys ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``, optionally prefixed
  with ``base_model.model.`` or ``transformer.`` (diffusers ``save_lora_weights`` style);
* kohya-style ``lora_down`` / ``lora_up`` names with the same dotted module paths, optional ``.alpha``.

``alpha`` comes from adapter_config.json (``lora_alpha``), else the file's metadata
(``lora_alpha`` / ``alpha``), else per-module ``.alpha`` tensors, else equals the rank
(scale 1). ``strength`` multiplies the update. Only Linear layers take a LoRA; the model stays a
plain module, so every attention backend and dtype keeps working.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import MIDILoadError

_PREFIXES = ("base_model.model.", "transformer.", "model.", "diffusion_model.")
_KEY = re.compile(r"^(?P<mod>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight$")
_ALPHA = re.compile(r"^(?P<mod>.+?)\.alpha$")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def read_lora(path: str):
    """-> (pairs {module: (A (r,in), B (out,r))}, alphas {module: float}, default alpha or None)."""
    from safetensors import safe_open

    cfg_alpha = None
    if os.path.isdir(path):
        folder = path
        path = os.path.join(folder, "adapter_model.safetensors")
    else:
        folder = os.path.dirname(path)
    if not os.path.isfile(path):
        raise MIDILoadError(f"LoRA file {path} not found: give a .safetensors file or a peft adapter folder")
    if not path.endswith(".safetensors"):
        raise MIDILoadError(f"LoRA {os.path.basename(path)}: only .safetensors LoRA files are loaded (convert it)")
    cfg = os.path.join(folder, "adapter_config.json")
    if os.path.isfile(cfg) and os.path.basename(path) == "adapter_model.safetensors":
        try:
            with open(cfg) as f:
                cfg_alpha = json.load(f).get("lora_alpha")
        except (OSError, ValueError) as e:
            raise MIDILoadError(f"LoRA config {cfg} is unreadable ({e}); fix or remove it") from None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise MIDILoadError(f"LoRA {os.path.basename(path)} is not a readable safetensors file "
                            f"({type(e).__name__}); re-download it") from None
    if cfg_alpha is None:
        for k in ("lora_alpha", "alpha"):
            if k in meta:
                try:
                    cfg_alpha = float(meta[k])
                except ValueError:
                    pass
                break
    a_mats, b_mats, alphas = {}, {}, {}
    for key, t in tensors.items():
        k = _strip(key)
        m = _KEY.match(k)
        if m:
            (a_mats if m["kind"] in ("lora_A", "lora_down") else b_mats)[m["mod"]] = t
            continue
        m = _ALPHA.match(k)
        if m:
            alphas[m["mod"]] = float(t.float().reshape(-1)[0])
            continue
        raise MIDILoadError(f"LoRA {os.path.basename(path)}: key '{key}' is not a LoRA weight "
                            f"(expected <module>.lora_A.weight / .lora_B.weight)")
    if not a_mats:
        raise MIDILoadError(f"LoRA {os.path.basename(path)} holds no lora_A/lora_B weights")
    missing = sorted(set(a_mats) ^ set(b_mats))
    if missing:
        raise MIDILoadError(f"LoRA {os.path.basename(path)}: module '{missing[0]}' has only one of lora_A / lora_B")
    return {k: (a_mats[k], b_mats[k]) for k in sorted(a_mats)}, alphas, cfg_alpha


@dataclass
class LoraUpdate:
    """The low-rank update of one Linear layer: ``weight += strength * scale * up @ down``."""

    down: torch.Tensor  # (rank, in_features)   peft lora_A / kohya lora_down
    up: torch.Tensor    # (out_features, rank)  peft lora_B / kohya lora_up
    scale: float        # alpha / rank

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def alpha(self) -> float:
        return self.scale * self.rank

    def delta(self, device=None) -> torch.Tensor:
        """The full update at strength 1, float32."""
        return self.scale * (self.up.to(device, torch.float32) @ self.down.to(device, torch.float32))


def load_lora(model: nn.Module, path: str) -> dict[str, LoraUpdate]:
    """Read the LoRA at ``path`` and check it against ``model``. -> {Linear module name: update}.

    Nothing is changed: merge with :func:`merge_lora`, or give the updates to a host that patches
    weights when it loads them (ComfyUI's ModelPatcher)."""
    pairs, alphas, default_alpha = read_lora(path)
    name = os.path.basename(path.rstrip("/"))
    modules = dict(model.named_modules())
    out = {}
    for mod, (a, b) in pairs.items():
        target = modules.get(mod)
        if target is None:
            raise MIDILoadError(f"LoRA {name}: module '{mod}' is not in the MIDI transformer "
                                f"(a LoRA for another model?)")
        if not isinstance(target, nn.Linear):
            raise MIDILoadError(f"LoRA {name}: '{mod}' is a {type(target).__name__}, only Linear layers can take a LoRA")
        r = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != r or a.shape[1] != target.in_features \
                or b.shape[0] != target.out_features:
            raise MIDILoadError(f"LoRA {name}: '{mod}' has lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)}, which do "
                                f"not fit a {target.in_features}->{target.out_features} layer (another model size?)")
        alpha = alphas.get(mod, default_alpha if default_alpha is not None else r)
        out[mod] = LoraUpdate(down=a.float(), up=b.float(), scale=float(alpha) / r)
    return out


@torch.no_grad()
def merge_lora(model: nn.Module, updates: dict[str, LoraUpdate], strength: float = 1.0) -> list[str]:
    """Add ``strength`` x each update to its layer's weight, in place (computed in float32)."""
    for mod, u in updates.items():
        w = model.get_submodule(mod).weight
        w.copy_((w.float() + float(strength) * u.delta(w.device)).to(w.dtype))
    return sorted(updates)


def apply_lora(model: nn.Module, path: str, strength: float = 1.0) -> list[str]:
    """Merge the LoRA at ``path`` into ``model`` (in place). Returns the patched module names."""
    return merge_lora(model, load_lora(model, path), strength)
