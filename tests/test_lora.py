"""LoRA adapters: merged into the MIDI transformer (midi_model/lora.py), and patched on a clone by LoadMIDIModel."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import GOLDEN_MODEL, _require
from nodes_fixtures import *  # noqa: F401,F403
from nodes_fixtures import TINY

from midi_model.checkpoint import load_transformer
from midi_model.errors import MIDILoadError
from midi_model.lora import apply_lora

TARGETS = ["blocks.0.attn1.to_q", "blocks.3.attn2.to_k"]


def _lora_tensors(model, rank=2, seed=0, prefix="", names=("lora_A", "lora_B")):
    g = torch.Generator().manual_seed(seed)
    out = {}
    mods = dict(model.named_modules())
    for t in TARGETS:
        lin = mods[t]
        out[f"{prefix}{t}.{names[0]}.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.1
        out[f"{prefix}{t}.{names[1]}.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.1
    return out


@pytest.fixture()
def transformer():
    from pathlib import Path
    return load_transformer(Path(_require(GOLDEN_MODEL)), torch.float32, "cpu")


def _delta(sd, t, prefix="", names=("lora_A", "lora_B")):
    return sd[f"{prefix}{t}.{names[1]}.weight"] @ sd[f"{prefix}{t}.{names[0]}.weight"]


def test_peft_adapter_folder_merges_exactly(transformer, tmp_path):
    sd = _lora_tensors(transformer, prefix="base_model.model.")
    save_file(sd, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4, "peft_type": "LORA"}))
    before = {t: transformer.get_submodule(t).weight.detach().clone() for t in TARGETS}
    other = transformer.get_submodule("blocks.1.attn1.to_q").weight.detach().clone()
    assert apply_lora(transformer, str(tmp_path), strength=0.5) == sorted(TARGETS)
    for t in TARGETS:
        expected = before[t] + 0.5 * (4 / 2) * _delta(sd, t, "base_model.model.")
        torch.testing.assert_close(transformer.get_submodule(t).weight, expected, atol=1e-6, rtol=1e-5)
        assert type(transformer.get_submodule(t)) is torch.nn.Linear     # peft wrappers removed after merging
    torch.testing.assert_close(transformer.get_submodule("blocks.1.attn1.to_q").weight, other)


def test_kohya_names_alpha_tensor_and_zero_strength(transformer, tmp_path):
    sd = _lora_tensors(transformer, prefix="transformer.", names=("lora_down", "lora_up"))
    sd.update({f"transformer.{t}.alpha": torch.tensor(1.0) for t in TARGETS})
    save_file(sd, tmp_path / "k.safetensors")
    before = {t: transformer.get_submodule(t).weight.detach().clone() for t in TARGETS}
    apply_lora(transformer, str(tmp_path / "k.safetensors"), strength=1.0)
    for t in TARGETS:
        expected = before[t] + 0.5 * _delta(sd, t, "transformer.", ("lora_down", "lora_up"))
        torch.testing.assert_close(transformer.get_submodule(t).weight, expected, atol=1e-6, rtol=1e-5)


def test_lora_errors_name_the_problem(transformer, tmp_path):
    bad = _lora_tensors(transformer)
    bad["blocks.99.attn1.to_q.lora_A.weight"] = torch.zeros(2, 96)
    bad["blocks.99.attn1.to_q.lora_B.weight"] = torch.zeros(96, 2)
    save_file(bad, tmp_path / "other_model.safetensors")
    with pytest.raises(MIDILoadError, match="blocks.99.attn1.to_q.*not in the MIDI transformer"):
        apply_lora(transformer, str(tmp_path / "other_model.safetensors"))
    wrong = _lora_tensors(transformer)
    wrong["blocks.0.attn1.to_q.lora_A.weight"] = torch.zeros(2, 7)
    save_file(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(MIDILoadError, match="do not fit"):
        apply_lora(transformer, str(tmp_path / "wrong.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(MIDILoadError, match="not a readable safetensors"):
        apply_lora(transformer, str(tmp_path / "junk.safetensors"))
    with pytest.raises(MIDILoadError, match="only .safetensors"):
        (tmp_path / "x.pt").write_bytes(b"")
        apply_lora(transformer, str(tmp_path / "x.pt"))


def test_load_node_patches_lora_on_a_clone(comfy_dirs, transformer, monkeypatch):
    """LoadMIDIModel keeps the model it read; a LoRA is a patch on a clone of the DiT's manager, applied when
    the sampler loads it, so a new strength reads neither the model nor the LoRA file again."""
    from comfyui_midi.midi_model import lora as pack_lora
    from comfyui_midi.nodes import loader

    sd = _lora_tensors(transformer, seed=3)
    save_file(sd, comfy_dirs / "models" / "loras" / "midi_test_lora.safetensors")
    assert "midi_test_lora.safetensors" in loader.LoadMIDIModel.INPUT_TYPES()["optional"]["lora"][0]
    reads = {"model": 0, "lora": 0}
    from_pretrained, read_lora = loader.MIDIPipeline.from_pretrained, pack_lora.read_lora

    def counted(kind, fn):
        def wrapper(*a, **k):
            reads[kind] += 1
            return fn(*a, **k)
        return wrapper
    monkeypatch.setattr(loader.MIDIPipeline, "from_pretrained", staticmethod(counted("model", from_pretrained)))
    monkeypatch.setattr(pack_lora, "read_lora", counted("lora", read_lora))

    node = loader.LoadMIDIModel()                      # ComfyUI keeps one instance per graph node
    (plain,) = node.load(TINY, "fp32", "sdpa")
    (x2,) = node.load(TINY, "fp32", "sdpa", lora="midi_test_lora.safetensors", lora_strength=2.0)
    (x05,) = node.load(TINY, "fp32", "sdpa", lora="midi_test_lora.safetensors", lora_strength=0.5)
    assert reads == {"model": 1, "lora": 1}
    assert x2.pipe is plain.pipe and x05.pipe is plain.pipe and x2.lora == "midi_test_lora.safetensors@2"
    layer = plain.pipe.transformer.get_submodule(TARGETS[0])
    base = transformer.get_submodule(TARGETS[0]).weight
    torch.testing.assert_close(layer.weight, base, atol=0, rtol=0)          # nothing merged by loading
    for model, strength in ((x2, 2.0), (x05, 0.5), (plain, 0.0), (x2, 2.0)):
        model.prepare("sample")                                            # what MIDI Sampler does first
        torch.testing.assert_close(layer.weight, base + strength * _delta(sd, TARGETS[0]), atol=1e-6, rtol=1e-5)
    plain.prepare("sample")
    torch.testing.assert_close(layer.weight, base, atol=0, rtol=0)          # the plain weights come back exactly
    other = plain.pipe.transformer.get_submodule("blocks.1.attn1.to_q").weight
    torch.testing.assert_close(other, transformer.get_submodule("blocks.1.attn1.to_q").weight, atol=0, rtol=0)
    # another dtype is another model: read again
    node.load(TINY, "bf16", "sdpa", lora="midi_test_lora.safetensors", lora_strength=1.0)
    assert reads["model"] == 2
