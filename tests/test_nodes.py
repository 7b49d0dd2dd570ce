"""ComfyUI nodes without ComfyUI: import as the host does, INPUT_TYPES contracts, the full chain on the
golden checkpoint, progress, cancel, errors, scene export."""
from __future__ import annotations

import inspect
import os
import re
import sys

import numpy as np
import pytest
import torch
import trimesh

from conftest import ROOT, pack_imported_as
from nodes_fixtures import *  # noqa: F401,F403  (fixtures)
from nodes_fixtures import TINY

from comfyui_midi import nodes
from comfyui_midi.midi_model.conditioning import MIDIConditioning
from comfyui_midi.midi_model.errors import MIDIError, MIDIInputError, MIDILoadError
from comfyui_midi.nodes import host

M = nodes.NODE_CLASS_MAPPINGS
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


# ------------------------------------------------------------------------------------------------
# import and contracts
def test_pack_imports_like_comfyui():
    """ComfyUI: spec_from_file_location(<path with '.' -> '_x_'>, <pack>/__init__.py), module in sys.modules."""
    name = (str(ROOT) + ".copy").replace(".", "_x_")
    with pack_imported_as(name) as mod:
        assert set(mod.NODE_CLASS_MAPPINGS) == {"LoadMIDIExample", "LoadMIDIModel", "SegmentScene",
                                                "EncodeMultiInstanceCondition", "MIDISampler", "MIDIRerollObjects",
                                                "DecodeToMeshes", "SaveMIDIScene", "AlignSceneToImage",
                                                "TextureFromImage", "RenderViews", "BakeViews"}
        assert set(mod.NODE_DISPLAY_NAME_MAPPINGS) == set(mod.NODE_CLASS_MAPPINGS)
        assert mod.NODE_DISPLAY_NAME_MAPPINGS["EncodeMultiInstanceCondition"] == "Encode Multi-Instance Condition"
        # the nodes use the pack's own library copy (a sibling package), not whatever 'midi_model' is on sys.path
        loader = sys.modules[name + ".nodes.loader"]
        assert loader.errors.__name__ == name + ".midi_model.errors"
        assert mod.NODE_CLASS_MAPPINGS["LoadMIDIModel"].__module__ == name + ".nodes.loader"


def test_only_host_imports_comfyui():
    pat = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|comfy_extras|folder_paths|nodes\b|server|execution)",
                     re.M)
    for path in sorted((ROOT / "nodes").glob("*.py")):
        if path.name != "host.py":
            assert not pat.search(path.read_text()), f"{path.name} imports ComfyUI; only nodes/host.py may"
    for path in sorted((ROOT / "midi_model").rglob("*.py")):
        assert not pat.search(path.read_text()), f"{path} imports ComfyUI"
    assert not host.IN_COMFY


def _specs(cls):
    it = cls.INPUT_TYPES()
    assert set(it) <= {"required", "optional", "hidden"}, cls
    for cat in ("required", "optional"):
        for name, spec in it.get(cat, {}).items():
            yield cat, name, spec


@pytest.mark.parametrize("key", sorted(M))
def test_input_types_are_valid(key, comfy_dirs):
    cls = M[key]
    assert cls.CATEGORY == "MIDI" or cls.CATEGORY.startswith("MIDI/")
    assert isinstance(cls.DESCRIPTION, str) and cls.DESCRIPTION
    assert key in nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    assert all(isinstance(t, str) and t for t in cls.OUTPUT_TOOLTIPS)
    fn = getattr(cls, cls.FUNCTION)
    params = inspect.signature(fn).parameters
    for cat, name, spec in _specs(cls):
        assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, (key, name)
        typ, opts = spec[0], (spec[1] if len(spec) > 1 else {})
        assert opts.get("tooltip"), f"{key}.{name} has no tooltip"
        assert name in params, f"{key}.{cls.FUNCTION}() does not take {name}"
        if isinstance(typ, list):
            assert typ and all(isinstance(v, str) for v in typ), (key, name)
            if "default" in opts:
                assert opts["default"] in typ, (key, name)
        else:
            assert isinstance(typ, str) and typ == typ.upper(), (key, name)
            if typ in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"], (key, name)
            if typ == "BOOLEAN":
                assert isinstance(opts["default"], bool)
        if cat == "required" and name not in params:
            pytest.fail(f"{key}: required input {name} missing from {cls.FUNCTION}()")
    for name, p in params.items():
        if name in ("self",) or p.default is not inspect.Parameter.empty:
            continue
        assert name in cls.INPUT_TYPES()["required"], f"{key}.{cls.FUNCTION}({name}) has no input"


def test_sampler_seed_has_control_after_generate():
    opts = M["MIDISampler"].INPUT_TYPES()["required"]["seed"][1]
    assert opts["control_after_generate"] is True and opts["max"] == 0xffffffffffffffff
    req = M["MIDISampler"].INPUT_TYPES()["required"]
    assert req["steps"][1]["default"] == 50 and req["guidance"][1]["default"] == 7.0


def test_segmenter_combos_list_what_exists_and_none(comfy_dirs, tiny_segmenters):
    """A label_map workflow saved with 'none' validates whether or not SAM / Grounding DINO exist; the combos
    offer no model that is not there (so a missing one is found when the prompt is validated)."""
    req = M["SegmentScene"].INPUT_TYPES()["required"]
    assert req["sam_model"][0] == ["sam_tiny.pth", "none"]
    assert req["grounding_dino"][0] == ["gdino-tiny", "none"]


def test_model_combo_lists_subfolders(comfy_dirs):
    choices = M["LoadMIDIModel"].INPUT_TYPES()["required"]["model"][0]
    assert choices == sorted([TINY, "MIDI-3D"])


# ------------------------------------------------------------------------------------------------
# the chain on the golden checkpoint
def _check_returns(cls, out):
    res = out["result"] if isinstance(out, dict) else out
    assert isinstance(res, tuple) and len(res) == len(cls.RETURN_TYPES)
    for typ, val in zip(cls.RETURN_TYPES, res):
        if typ == "IMAGE":
            assert isinstance(val, torch.Tensor) and val.ndim == 4 and val.shape[-1] == 3 and val.dtype == torch.float32
            assert 0 <= float(val.min()) and float(val.max()) <= 1
        elif typ == "MASK":
            assert isinstance(val, torch.Tensor) and val.ndim == 3 and val.dtype == torch.float32
        elif typ == "STRING":
            assert isinstance(val, str)
        elif typ == "MIDI_MODEL":
            assert hasattr(val, "pipe") and hasattr(val, "prepare")
        elif typ == "MIDI_CONDITIONING":
            assert isinstance(val, MIDIConditioning)
        elif typ == "MIDI_LATENTS":
            assert isinstance(val["samples"], torch.Tensor) and val["samples"].ndim == 3
        elif typ == "MESH":
            assert isinstance(val, host.MESH) and val.vertices.ndim == 3 and val.faces.ndim == 3
        elif typ == "FILE_3D_GLB":
            assert isinstance(val, host.File3D)
        else:
            pytest.fail(f"unknown return type {typ}")
    return res


def test_full_chain_matches_golden(midi_model, scene_image, seg_image, golden_arrays, comfy_dirs, progress_log):
    seg = M["SegmentScene"]()
    masks, preview, labels = _check_returns(
        SegmentScene := M["SegmentScene"],
        seg.segment(scene_image, "label_map", max_instances=3, too_many="keep_first", seg_map=seg_image))
    assert masks.shape == (3, 256, 256)
    np.testing.assert_array_equal(masks.numpy() > 0.5, golden_arrays["instance_mask"] > 0)
    assert labels == "seg 29, seg 76, seg 150"

    cond, inst = _check_returns(M["EncodeMultiInstanceCondition"],
                                M["EncodeMultiInstanceCondition"]().encode(midi_model, scene_image, masks, False))
    assert inst.shape == (3, 256, 256, 3)
    np.testing.assert_allclose(cond.image_embeds_2.numpy(), golden_arrays["image_embeds_2"], atol=1e-5)

    (lat,) = _check_returns(M["MIDISampler"], M["MIDISampler"]().sample(midi_model, cond, 42, 4, 7.0))
    np.testing.assert_allclose(lat["samples"].numpy(), golden_arrays["final_latents"], atol=1e-5)
    assert progress_log == [(1, 4), (2, 4), (3, 4), (4, 4)]

    progress_log.clear()
    (mesh,) = _check_returns(M["DecodeToMeshes"], M["DecodeToMeshes"]().decode(midi_model, lat, 5, "progressive", True))
    assert progress_log and progress_log[-1][0] == progress_log[-1][1]
    assert [v for v, _ in progress_log] == sorted(v for v, _ in progress_log)
    assert mesh.vertices.shape[0] == 3
    for i in range(3):
        n, f = int(mesh.vertex_counts[i]), int(mesh.face_counts[i])
        np.testing.assert_allclose(mesh.vertices[i, :n].numpy(), golden_arrays[f"mesh{i}_vertices"], atol=1e-4)
        np.testing.assert_array_equal(mesh.faces[i, :f].numpy(), golden_arrays[f"mesh{i}_faces"])

    out = M["SaveMIDIScene"]().save(mesh, "chain/scene", True, labels)
    rel, f3d = _check_returns(M["SaveMIDIScene"], out)
    path = comfy_dirs / "output" / rel
    assert path.is_file() and f3d.get_source() == str(path)
    scene = trimesh.load(path)
    assert sorted(scene.graph.nodes_geometry) == ["seg_150", "seg_29", "seg_76"]
    assert {k: len(g.faces) for k, g in scene.geometry.items()} == {
        "seg_29": len(golden_arrays["mesh0_faces"]), "seg_76": len(golden_arrays["mesh1_faces"]),
        "seg_150": len(golden_arrays["mesh2_faces"])}
    files = [f["filename"] for f in out["ui"]["3d"]]
    assert files[0] == os.path.basename(rel) and len(files) == 4
    for name in files[1:]:
        obj = trimesh.load(path.parent / name)
        assert len(obj.geometry) == 1


# ------------------------------------------------------------------------------------------------
# cancel and progress
def test_cancel_during_sampling_stops_within_one_step(midi_model, scene_image, seg_image, progress_log):
    masks, _, _ = M["SegmentScene"]().segment(scene_image, "label_map", max_instances=2, too_many="keep_first",
                                              seg_map=seg_image)
    cond, _ = M["EncodeMultiInstanceCondition"]().encode(midi_model, scene_image, masks, False)
    calls = []
    handle = midi_model.pipe.transformer.register_forward_hook(lambda *a: calls.append(1))

    def hook(v, t, node):
        progress_log.append((v, t))
        if v == 2:
            host.request_interrupt()
    host.set_progress_hook(hook)
    try:
        with pytest.raises(host.Interrupted):
            M["MIDISampler"]().sample(midi_model, cond, 1, 10, 7.0)
    finally:
        handle.remove()
    assert progress_log == [(1, 10), (2, 10)]
    assert len(calls) == 2  # no step after the cancelled one


def _count_vae_chunks(midi_model, monkeypatch, chunk):
    """Every VAE query call is one chunk of grid points; returns the list they are counted in."""
    vae, calls = midi_model.pipe.vae, []
    query = vae.query
    monkeypatch.setattr(vae, "query", lambda *a, **k: (calls.append(1), query(*a, **k))[1])
    decode = midi_model.pipe.decode
    monkeypatch.setattr(midi_model.pipe, "decode", lambda *a, **k: decode(*a, **dict(k, chunk=chunk)))
    return calls


@pytest.mark.parametrize("decoder", ["dense", "progressive", "hierarchical", "progressive-hierarchical"])
def test_progress_after_every_vae_chunk(decoder, midi_model, golden_arrays, progress_log, monkeypatch):
    calls = _count_vae_chunks(midi_model, monkeypatch, chunk=700)
    lat = {"samples": torch.from_numpy(golden_arrays["final_latents"])}
    M["DecodeToMeshes"]().decode(midi_model, lat, 5, decoder, True)
    assert len(calls) > 10
    assert len(progress_log) >= len(calls)                      # one update (and Cancel check) per chunk
    values = [v for v, _ in progress_log]
    assert values == sorted(values) and progress_log[-1][0] == progress_log[-1][1]
    assert len({t for _, t in progress_log}) == 1


@pytest.mark.parametrize("decoder", ["dense", "progressive-hierarchical"])
def test_cancel_during_decoding_stops_within_one_chunk(decoder, midi_model, golden_arrays, progress_log, monkeypatch):
    calls = _count_vae_chunks(midi_model, monkeypatch, chunk=700)
    lat = {"samples": torch.from_numpy(golden_arrays["final_latents"])}

    def hook(v, t, node):
        progress_log.append((v, t))
        if len(progress_log) == 3:
            host.request_interrupt()
    host.set_progress_hook(hook)
    with pytest.raises(host.Interrupted):
        M["DecodeToMeshes"]().decode(midi_model, lat, 5, decoder, True)
    assert len(progress_log) == 3 and progress_log[-1][0] < progress_log[-1][1]
    assert len(calls) == 3  # no VAE chunk after the one during which Cancel was pressed


# ------------------------------------------------------------------------------------------------
# saving
def _box_mesh(offset=0.0):
    m = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    m.apply_translation((offset, 0, 0))
    return m


def test_save_never_overwrites_and_stays_in_output(comfy_dirs):
    from comfyui_midi.nodes.decode import meshes_to_core

    mesh = meshes_to_core([_box_mesh(), _box_mesh(0.5)])
    out_dir = comfy_dirs / "output"
    first = M["SaveMIDIScene"]().save(mesh, "keep/s", False, "a, a")["result"][0]
    second = M["SaveMIDIScene"]().save(mesh, "keep/s", False, "")["result"][0]
    assert first == "keep/s_00001_.glb" and second == "keep/s_00002_.glb"
    (out_dir / "keep" / "s_00007_.glb").write_bytes(b"mine")
    third = M["SaveMIDIScene"]().save(mesh, "keep/s", False, "")["result"][0]
    assert third == "keep/s_00008_.glb" and (out_dir / "keep" / "s_00007_.glb").read_bytes() == b"mine"
    assert sorted(trimesh.load(out_dir / first).geometry) == ["a", "a_2"]
    assert sorted(trimesh.load(out_dir / second).geometry) == ["object_1", "object_2"]
    for bad in ("../evil", "/tmp/evil", "a/../../evil"):
        with pytest.raises(ValueError, match="filename_prefix") as e:
            M["SaveMIDIScene"]().save(mesh, bad, False, "")
        assert "\n" not in str(e.value)
    assert not (comfy_dirs / "evil_00001_.glb").exists()


def test_mesh_batch_roundtrip_with_empty_item_and_uniform_core_batch(comfy_dirs):
    from comfyui_midi.nodes.decode import core_to_meshes, meshes_to_core

    items = [_box_mesh(), trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), trimesh.creation.icosphere(1)]
    core = meshes_to_core(items)
    assert core.vertex_counts.tolist() == [8, 0, 42] and core.face_counts.tolist() == [12, 0, 80]
    back = core_to_meshes(core)
    for a, b in zip(items, back):
        np.testing.assert_allclose(np.asarray(a.vertices, np.float32), b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)
    rel = M["SaveMIDIScene"]().save(core, "empty/s", False, "box, nothing, ball")["result"][0]
    assert sorted(trimesh.load(comfy_dirs / "output" / rel).geometry) == ["ball", "box"]
    # a core MESH without counts (uniform batch, as core VoxelToMesh makes)
    box = _box_mesh()
    uniform = host.MESH(torch.tensor(np.stack([box.vertices] * 2), dtype=torch.float32),
                        torch.tensor(np.stack([box.faces] * 2)))
    rel = M["SaveMIDIScene"]().save(uniform, "uniform/s", False, "")["result"][0]
    assert len(trimesh.load(comfy_dirs / "output" / rel).geometry) == 2
    with pytest.raises(MIDIInputError, match="empty"):
        M["SaveMIDIScene"]().save(meshes_to_core([items[1]]), "empty/s", False, "")


def test_old_host_mesh_without_counts(monkeypatch, comfy_dirs):
    """ComfyUI 0.8: MESH(vertices, faces) only; the counts ride along as attributes."""
    from comfyui_midi.nodes.decode import meshes_to_core

    class OldMESH:
        def __init__(self, vertices, faces):
            self.vertices, self.faces = vertices, faces
    monkeypatch.setattr(host, "MESH", OldMESH)
    monkeypatch.setattr(host, "MESH_HAS_COUNTS", False)
    core = meshes_to_core([_box_mesh(), trimesh.creation.icosphere(1)])
    assert isinstance(core, OldMESH) and core.vertex_counts.tolist() == [8, 42]
    rel = M["SaveMIDIScene"]().save(core, "old/s", False, "")["result"][0]
    assert {k: len(g.faces) for k, g in trimesh.load(comfy_dirs / "output" / rel).geometry.items()} == {
        "object_1": 12, "object_2": 80}


def test_decode_post_processing_options(midi_model, golden_arrays):
    lat = {"samples": torch.from_numpy(golden_arrays["final_latents"][:1])}
    (plain,) = M["DecodeToMeshes"]().decode(midi_model, lat, 5, "dense", True, False, 0)
    (capped,) = M["DecodeToMeshes"]().decode(midi_model, lat, 5, "dense", True, True, 500)
    assert int(capped.face_counts[0]) <= 500 < int(plain.face_counts[0])


# ------------------------------------------------------------------------------------------------
# errors read well: one line that says what to change
def _one_line(exc):
    msg = str(exc.value)
    assert msg and "\n" not in msg and len(msg) < 400, msg
    return msg


def test_errors_are_one_line(midi_model, scene_image, seg_image, comfy_dirs):
    with pytest.raises(MIDILoadError) as e:
        M["LoadMIDIModel"]().load("nope", "fp32", "sdpa")
    assert "download" in _one_line(e) and "nope" in str(e.value)
    with pytest.raises(MIDILoadError) as e:
        M["LoadMIDIModel"]().load(TINY, "fp32", "sdpa", lora="missing.safetensors")
    assert "LoRA" in _one_line(e)
    small = torch.ones(2, 128, 128)
    with pytest.raises(MIDIInputError) as e:
        M["EncodeMultiInstanceCondition"]().encode(midi_model, scene_image, small, False)
    assert "resize" in _one_line(e)
    with pytest.raises(MIDIInputError) as e:
        M["EncodeMultiInstanceCondition"]().encode(midi_model, scene_image, torch.zeros(1, 256, 256), False)
    assert "empty" in _one_line(e)
    with pytest.raises(MIDIInputError) as e:
        M["SegmentScene"]().segment(scene_image, "label_map")
    assert "seg_map" in _one_line(e)
    with pytest.raises(MIDILoadError) as e:
        M["SegmentScene"]().segment(scene_image, "boxes", boxes="0,0,10,10", sam_model="none")
    assert "SAM" in _one_line(e)
    with pytest.raises(MIDIInputError) as e:
        M["SegmentScene"]().segment(scene_image, "label_map", max_instances=2, seg_map=seg_image)
    assert "max_instances" in _one_line(e)
    with pytest.raises(MIDIInputError) as e:
        M["DecodeToMeshes"]().decode(midi_model, {"samples": torch.zeros(5)}, 5)
    _one_line(e)
    for exc in (MIDILoadError, MIDIInputError):
        assert issubclass(exc, MIDIError) and issubclass(exc, ValueError)


def test_one_default_decoder_everywhere():
    """Library functions, the CLI and the node all default to meshing.DEFAULT_DECODER
    (the shipped workflows are checked in test_workflows.py)."""
    from comfyui_midi.midi_model import meshing, pipeline
    from comfyui_midi.midi_model.__main__ import _parser

    default = meshing.DEFAULT_DECODER
    assert default in meshing.DECODERS
    for fn in (meshing.decode_grids, pipeline.MIDIPipeline.decode, pipeline.MIDIPipeline.__call__,
               M["DecodeToMeshes"].decode):
        assert inspect.signature(fn).parameters["decoder"].default == default, fn
    assert M["DecodeToMeshes"].INPUT_TYPES()["required"]["decoder"][1]["default"] == default
    args = _parser().parse_args(["generate", "--model", "m", "--image", "i", "--seg", "s", "--out", "o.glb"])
    assert args.decoder == default


def test_decoder_choices_come_from_the_library(midi_model, golden_arrays):
    from comfyui_midi.midi_model.meshing import DECODERS

    assert M["DecodeToMeshes"].INPUT_TYPES()["required"]["decoder"][0] == list(DECODERS)
    lat = {"samples": torch.from_numpy(golden_arrays["final_latents"])}
    (mesh,) = M["DecodeToMeshes"]().decode(midi_model, lat, 5, "progressive-hierarchical", True)
    for i in range(3):
        n = int(mesh.vertex_counts[i])
        np.testing.assert_allclose(mesh.vertices[i, :n].numpy(), golden_arrays[f"mesh{i}_vertices"], atol=1e-4)


def test_decode_on_two_threads_as_the_host_runs_it(midi_model, golden_arrays):
    """The suite runs on one torch thread; ComfyUI on all cores, so the decode's CPU streams (queries,
    smoothing slabs) run in other threads while the node holds inference mode (the host once failed
    there: a slab written in place outside it)."""
    lat = {"samples": torch.from_numpy(golden_arrays["final_latents"])}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (mesh,) = M["DecodeToMeshes"]().decode(midi_model, lat, 5, "progressive-hierarchical", True)
    finally:
        torch.set_num_threads(before)
    for i in range(3):
        n, f = int(mesh.vertex_counts[i]), int(mesh.face_counts[i])
        np.testing.assert_allclose(mesh.vertices[i, :n].numpy(), golden_arrays[f"mesh{i}_vertices"], atol=1e-4)
        np.testing.assert_array_equal(mesh.faces[i, :f].numpy(), golden_arrays[f"mesh{i}_faces"])


def test_download_offline_is_one_clear_error(comfy_dirs, monkeypatch):
    import huggingface_hub

    def offline(**kwargs):  # what snapshot_download raises without a network
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ValueError, match=r"could not download VAST-AI/MIDI-3D into .*models/midi/NotHere "
                                         r"\(LocalEntryNotFoundError\): without internet"):
        M["LoadMIDIModel"]().load("NotHere", "fp32", "sdpa", download=True)
