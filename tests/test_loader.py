"""Strict loading: every way a model folder can be wrong gives one message naming the file or key."""
from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from midi_model.errors import MIDILoadError
from midi_model import meshing
from midi_model.pipeline import MIDIPipeline
from midi_model.testing import write_random_checkpoint


def writable_copy(src, dst):
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
    return dst


@pytest.fixture()
def folder(golden_model_dir, tmp_path):
    return writable_copy(golden_model_dir, tmp_path / "MIDI-3D")


def load(folder):
    return MIDIPipeline.from_pretrained(folder, device="cpu", dtype="fp32")


def edit_weights(path, fn):
    sd = load_file(str(path))
    fn(sd)
    save_file(sd, str(path))


DIT = "transformer/diffusion_pytorch_model.safetensors"


def test_missing_folder(tmp_path):
    with pytest.raises(MIDILoadError, match=r"does not exist: download VAST-AI/MIDI-3D"):
        load(tmp_path / "nope")


def test_missing_subfolder(folder):
    shutil.rmtree(folder / "vae")
    with pytest.raises(MIDILoadError, match=r"has no vae/ sub-folder"):
        load(folder)


def test_missing_weights_file(folder):
    (folder / DIT).unlink()
    with pytest.raises(MIDILoadError, match=r"transformer has no weights"):
        load(folder)


def test_missing_tensor(folder):
    edit_weights(folder / DIT, lambda sd: sd.pop("blocks.3.attn1.to_q.weight"))
    with pytest.raises(MIDILoadError, match=r"transformer: tensor 'blocks.3.attn1.to_q.weight' is missing"):
        load(folder)


def test_extra_tensor(folder):
    edit_weights(folder / DIT, lambda sd: sd.update({"blocks.3.lora_A.weight": torch.zeros(2, 2)}))
    with pytest.raises(MIDILoadError, match=r"unexpected tensor 'blocks.3.lora_A.weight'"):
        load(folder)


def test_wrong_shape(folder):
    edit_weights(folder / DIT, lambda sd: sd.update({"proj_in.weight": torch.zeros(96, 17)}))
    with pytest.raises(MIDILoadError, match=r"tensor 'proj_in.weight' has shape \(96, 17\), the config expects \(96, 16\)"):
        load(folder)


def test_config_that_does_not_match_weights(folder):
    cfg = json.loads((folder / "transformer/config.json").read_text())
    cfg["width"] = 128
    (folder / "transformer/config.json").write_text(json.dumps(cfg))
    with pytest.raises(MIDILoadError, match=r"config.json and weights do not match"):
        load(folder)


def test_truncated_safetensors(folder):
    path = folder / "vae/diffusion_pytorch_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MIDILoadError, match=r"vae/diffusion_pytorch_model.safetensors is not a readable "
                                             r"safetensors file .*corrupt or truncated"):
        load(folder)


def test_corrupt_encoder_weights(folder):
    (folder / "image_encoder_2/model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(MIDILoadError, match=r"image_encoder_2/model.safetensors is not a readable"):
        load(folder)


def test_encoder_missing_tensor(folder):
    edit_weights(folder / "image_encoder_1/model.safetensors",
                 lambda sd: sd.pop("visual_projection.weight"))
    with pytest.raises(MIDILoadError, match=r"image_encoder_1: tensor 'visual_projection.weight' is missing"):
        load(folder)


def test_triposg_folder_is_recognised(tmp_path):
    root = tmp_path / "TripoSG"
    for sub in ("transformer", "vae", "scheduler", "image_encoder_dinov2", "feature_extractor_dinov2"):
        (root / sub).mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "TripoSGPipeline"}))
    with pytest.raises(MIDILoadError, match=r"is a TripoSG model .* not MIDI"):
        load(root)


def test_triposg_transformer_config_is_recognised(folder):
    cfg = json.loads((folder / "transformer/config.json").read_text())
    cfg.pop("cross_attention_2_dim")
    (folder / "transformer/config.json").write_text(json.dumps(cfg))
    with pytest.raises(MIDILoadError, match=r"not MIDI's DiT"):
        load(folder)


def test_missing_shard(tmp_path):
    root = write_random_checkpoint(tmp_path / "m", "tiny", seed=1, shards=2)
    (root / "transformer/diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(MIDILoadError, match=r"00002-of-00002.safetensors is missing .*partial"):
        load(root)


def test_fp16_may_be_stored_on_the_cpu_but_not_run_there(golden_model_dir, golden):
    from midi_model.errors import MIDIInputError

    # ComfyUI keeps offloaded models on the CPU in their load dtype
    pipe = MIDIPipeline.from_pretrained(golden_model_dir, device="cpu", dtype="fp16")
    assert pipe.dtype == torch.float16
    with pytest.raises(MIDIInputError, match=r"decode: fp16 runs only on a GPU.*fp32 or bf16"):
        pipe.decode(torch.from_numpy(golden["final_latents"]), octree_depth=3)


def test_library_strings_are_ignored(folder):
    idx = json.loads((folder / "model_index.json").read_text())
    idx["transformer"] = ["some.module.that.does.not.exist", "Whatever"]
    (folder / "model_index.json").write_text(json.dumps(idx))
    assert load(folder).transformer.config.width == 96


def test_bf16_sharded_checkpoint_written_by_the_test_loads_and_runs(tmp_path):
    root = write_random_checkpoint(tmp_path / "bf16", "tiny", seed=7, dtype=torch.bfloat16, shards=3)
    assert len(list((root / "transformer").glob("*-of-00003.safetensors"))) == 3
    pipe = load(root)
    assert pipe.dtype == torch.float32
    # the bf16 values on disk survive the cast exactly
    on_disk = load_file(str(root / "transformer/diffusion_pytorch_model-00001-of-00003.safetensors"))
    key = next(iter(on_disk))
    torch.testing.assert_close(pipe.transformer.state_dict()[key], on_disk[key].float(), rtol=0, atol=0)
    rgb = np.full((64, 64, 3), 200, np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 8:30, 8:30] = True
    masks[1, 34:60, 30:62] = True
    cond = pipe.encode(rgb, masks)
    lat = pipe.sample(cond, seed=3, steps=2, guidance_scale=3.0)
    assert lat.shape == (2, 96, 16) and torch.isfinite(lat).all()
    meshes = pipe.decode(lat, octree_depth=4, decoder="dense")
    assert len(meshes) == 2
    # another seed gives other latents; the same seed the same ones
    assert not torch.equal(lat, pipe.sample(cond, seed=4, steps=2, guidance_scale=3.0))
    assert torch.equal(lat, pipe.sample(cond, seed=3, steps=2, guidance_scale=3.0))


def test_dino_with_three_channels_is_widened(tmp_path):
    from transformers import Dinov2Model

    root = write_random_checkpoint(tmp_path / "m", "tiny", seed=2)
    cfg = json.loads((root / "image_encoder_2/config.json").read_text())
    cfg["num_channels"] = 3
    three = Dinov2Model(Dinov2Model.config_class(**cfg))
    three.save_pretrained(str(root / "image_encoder_2"))
    pipe = load(root)
    w = pipe.image_encoder_2.embeddings.patch_embeddings.projection.weight
    w3 = three.embeddings.patch_embeddings.projection.weight
    assert w.shape[1] == 7
    torch.testing.assert_close(w[:, :3], w3)
    torch.testing.assert_close(w[:, 3:6], w3)
    torch.testing.assert_close(w[:, 6:7], w3[:, :1])


def test_download_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from midi_model.hub import download_model

    with pytest.raises(MIDILoadError, match=r"could not download VAST-AI/MIDI-3D into .*without internet"):
        download_model(tmp_path / "dl")


def test_out_of_memory_names_the_setting_that_lowers_it(golden_pipe, golden, monkeypatch):
    from midi_model.errors import MIDIOutOfMemoryError
    from midi_model.inputs import split_label_map

    cond = golden_pipe.encode(golden["inputs_rgb"], split_label_map(golden["inputs_seg"], 2)[1])

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(golden_pipe.transformer, "forward", oom)
    # its own type, still a torch OOM (hosts that free memory on OOM recognise it)
    assert issubclass(MIDIOutOfMemoryError, torch.OutOfMemoryError)
    with pytest.raises(MIDIOutOfMemoryError, match=r"^sample: out of GPU memory: use fewer objects, bf16/fp16"):
        golden_pipe.sample(cond, steps=1)
    monkeypatch.setattr(golden_pipe.vae, "query", oom)
    with pytest.raises(MIDIOutOfMemoryError, match=r"^decode: out of GPU memory: lower octree_depth"):
        golden_pipe.decode(torch.from_numpy(golden["final_latents"]), octree_depth=3, decoder="dense")


@pytest.mark.parametrize("decoder", ["progressive", "progressive-hierarchical"])
def test_decode_out_of_memory_retries_with_smaller_chunks(decoder, golden_pipe, golden, monkeypatch, caplog):
    """As ComfyUI's VAE decode does: an OOM starts the decode again in smaller pieces; same meshes."""
    lat = torch.from_numpy(golden["final_latents"])
    expected = golden_pipe.decode(lat, octree_depth=5, decoder=decoder, chunk=3000)
    query, sizes, raised = golden_pipe.vae.query, [], []

    def small_only(context, points, keys=None):
        sizes.append(points.shape[1])
        if points.shape[1] > 3000:
            raised.append(len(sizes))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return query(context, points, keys)

    monkeypatch.setattr(golden_pipe.vae, "query", small_only)
    # as on a GPU: the chunk sets the query size (the CPU's cap would keep every block small already)
    monkeypatch.setattr(meshing, "CPU_QUERY_BLOCK", 1 << 20)
    with caplog.at_level("WARNING", logger="midi_model.pipeline"):
        meshes = golden_pipe.decode(lat, octree_depth=5, decoder=decoder, chunk=48_000)
    assert [r.getMessage() for r in caplog.records] == [
        "decode: out of GPU memory, retrying with 12000 grid points per chunk",
        "decode: out of GPU memory, retrying with 3000 grid points per chunk"]
    # the second try asked for at most 12000 points at a time, the third ran in chunks of 3000
    assert len(raised) == 2 and 3000 < sizes[raised[1] - 1] <= 12_000
    assert max(sizes[raised[1]:]) <= 3000
    for a, b in zip(meshes, expected):
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(a.vertices, b.vertices)
