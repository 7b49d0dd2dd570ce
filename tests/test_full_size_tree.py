"""The full-size module tree, built on the meta device, has exactly the released keys and shapes.

This is how we know the real VAST-AI/MIDI-3D weights load without downloading them.
"""
from __future__ import annotations

import re
from collections import defaultdict

import pytest
import torch

from midi_model.checkpoint import build_dit, build_image_encoder, build_vae
from midi_model.presets import PRESETS

PARAMS = {"transformer": 1_681_911_616, "vae": 242_662_017,
          "image_encoder_1": 303_966_208, "image_encoder_2": 305_171_456}
# transformers >= 5 renames some DINOv2 tensors in memory and maps them back on save/load
HF_RENAMES = [(r"\.attention\.q_proj\.", ".attention.attention.query."),
              (r"\.attention\.k_proj\.", ".attention.attention.key."),
              (r"\.attention\.v_proj\.", ".attention.attention.value."),
              (r"\.attention\.o_proj\.", ".attention.output.dense.")]


@pytest.fixture(scope="module")
def released(shared_dir):
    keys = defaultdict(dict)
    for line in (shared_dir / "reference" / "midi_state_dict_keys.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        comp, key, shape = line.split("\t")
        keys[comp][key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return keys


def checkpoint_names(module) -> dict:
    out = {}
    for k, v in module.state_dict().items():
        for pat, rep in HF_RENAMES:
            k = re.sub(pat, rep, k)
        out[k] = tuple(v.shape)
    return out


def build(component):
    full = PRESETS["full"]
    if component == "transformer":
        return build_dit(full["transformer"])
    if component == "vae":
        return build_vae(full["vae"])
    kind = "clip" if component == "image_encoder_1" else "dino"
    return build_image_encoder(kind, dict(full[kind]))


@pytest.mark.parametrize("component", list(PARAMS))
def test_keys_and_shapes_equal_the_release(released, component):
    module = build(component)
    assert next(module.parameters()).device.type == "meta"
    ours = checkpoint_names(module)
    ref = released[component]
    assert set(ours) - set(ref) == set(), f"keys we have that the release lacks: {sorted(set(ours) - set(ref))[:5]}"
    assert set(ref) - set(ours) == set(), f"released keys we lack: {sorted(set(ref) - set(ours))[:5]}"
    wrong = {k: (ours[k], ref[k]) for k in ref if ours[k] != ref[k]}
    assert not wrong, f"shape mismatches: {list(wrong.items())[:5]}"


@pytest.mark.parametrize("component", list(PARAMS))
def test_parameter_counts(component):
    module = build(component)
    assert sum(p.numel() for p in module.parameters()) == PARAMS[component]


def test_multi_instance_blocks_are_8_to_12():
    dit = build("transformer")
    assert [i for i, b in enumerate(dit.blocks) if b.attn1.use_mi] == [8, 9, 10, 11, 12]
    assert not any(b.attn2.use_mi or b.attn2_2.use_mi for b in dit.blocks)
    assert [i for i, b in enumerate(dit.blocks) if b.skip_linear is not None] == list(range(11, 21))
