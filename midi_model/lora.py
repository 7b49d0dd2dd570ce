"""LoRA adapters for the MIDI transformer, applied with ``peft`` and merged into the weights.

Accepted files (safetensors only):
* a peft adapter: ``adapter_model.safetensors`` (+ ``adapter_config.json`` next to it, or a folder
  holding both); keys ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``, optionally prefixed
  with ``base_model.model.`` or ``transformer.`` (diffusers ``save_lora_weights`` style);
* kohya-style ``lora_down`` / ``lora_up`` names with the same dotted module paths, optional ``.alpha``.

``alpha`` comes from adapter_config.json (``lora_alpha``), else the file's metadata
(``lora_alpha`` / ``alpha``), else per-module ``.alpha`` tensors, else equals the rank
(scale 1). ``strength`` multiplies the update. After merging, the transformer is a plain
module again (no peft wrappers), so every attention backend and dtype keeps working.
"""
from __future__ import annotations

import json
import os
import re

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


def apply_lora(model: nn.Module, path: str, strength: float = 1.0) -> list[str]:
    """Merge the LoRA at ``path`` into ``model`` (in place) with peft. Returns the patched module names."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    pairs, alphas, default_alpha = read_lora(path)
    name = os.path.basename(path.rstrip("/"))
    modules = dict(model.named_modules())
    ranks = {}
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
        ranks[mod] = r
    targets = sorted(pairs)
    r0 = ranks[targets[0]]
    alpha_of = {m: alphas.get(m, default_alpha if default_alpha is not None else ranks[m]) for m in targets}
    config = LoraConfig(
        r=r0, lora_alpha=alpha_of[targets[0]], target_modules=targets, lora_dropout=0.0, bias="none",
        rank_pattern={f"^{re.escape(m)}$": ranks[m] for m in targets if ranks[m] != r0},
        alpha_pattern={f"^{re.escape(m)}$": alpha_of[m] for m in targets if alpha_of[m] != alpha_of[targets[0]]},
    )
    sd = {}
    for m, (a, b) in pairs.items():
        sd[f"{m}.lora_A.weight"] = a.float()
        sd[f"{m}.lora_B.weight"] = b.float() * float(strength)
    try:
        inject_adapter_in_model(config, model, adapter_name="default")
        result = set_peft_model_state_dict(model, sd, adapter_name="default")
    except Exception as e:
        raise MIDILoadError(f"LoRA {name} could not be applied ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise MIDILoadError(f"LoRA {name}: weight '{unexpected[0]}' did not load")
    # merge every adapter into its base layer and put the plain layer back
    for mod_name, mod in list(model.named_modules()):
        if isinstance(mod, LoraLayer):
            mod.merge(safe_merge=True)
            parent_name, _, child = mod_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, mod.get_base_layer())
    return targets
