"""Everything the nodes run goes through host.load_models (ComfyUI's load_models_gpu) with the stage's
working-memory estimate; SAM and Grounding DINO are managed models held per node, not in a module cache."""
from __future__ import annotations

import pytest
import torch

from nodes_fixtures import *  # noqa: F401,F403  (fixtures)

from comfyui_midi import nodes
from comfyui_midi.midi_model import memory
from comfyui_midi.nodes import host

M = nodes.NODE_CLASS_MAPPINGS


@pytest.fixture()
def loads(monkeypatch):
    """Every host.load_models call: ([part names], memory_required)."""
    calls = []
    load = host.load_models

    def record(managed, memory_required=0):
        calls.append(([m.name for m in managed], memory_required))
        return load(managed, memory_required)
    monkeypatch.setattr(host, "load_models", record)
    return calls


def test_each_stage_loads_with_its_memory_estimate(midi_model, scene_image, seg_image, golden_arrays, loads):
    pipe = midi_model.pipe
    masks, _, _ = M["SegmentScene"]().segment(scene_image, "label_map", seg_map=seg_image)
    assert loads == []                                           # label_map needs no model
    cond, _ = M["EncodeMultiInstanceCondition"]().encode(midi_model, scene_image, masks, False)
    M["MIDISampler"]().sample(midi_model, cond, 1, 1, 7.0)
    M["MIDISampler"]().sample(midi_model, cond, 1, 1, 1.0)
    lat = {"samples": torch.from_numpy(golden_arrays["final_latents"])}
    M["DecodeToMeshes"]().decode(midi_model, lat, 4, "dense", True)
    M["DecodeToMeshes"]().decode(midi_model, lat, 4, "hierarchical", True)
    n = len(masks)
    assert loads == [
        (["image_encoder_1", "image_encoder_2"], memory.encode_bytes(pipe, n)),
        (["transformer"], memory.sample_bytes(pipe, n, 7.0)),
        (["transformer"], memory.sample_bytes(pipe, n, 1.0)),
        (["vae"], memory.decode_bytes(pipe, n, 50_000, "dense")),
        (["vae"], memory.decode_bytes(pipe, n, 50_000, "hierarchical")),
    ]
    # the estimates follow what drives the memory: objects, the CFG batch, all objects per chunk or one
    assert 0 < memory.encode_bytes(pipe, 1) < memory.encode_bytes(pipe, 3)
    assert memory.sample_bytes(pipe, n, 7.0) == 2 * memory.sample_bytes(pipe, n, 1.0)
    assert memory.decode_bytes(pipe, n, 50_000, "hierarchical") < memory.decode_bytes(pipe, n, 50_000, "dense")


def test_block_bytes_counts_the_attention_matrix_only_when_materialised():
    assert memory.block_bytes(2, 10, 8, 4) == 2 * 10 * 8 * memory.BLOCK_WIDTHS * 4
    assert memory.block_bytes(2, 10, 8, 4, heads=3, context=5) == memory.block_bytes(2, 10, 8, 4) + 2 * 2 * 3 * 10 * 5 * 4


def test_sam_and_grounding_dino_are_managed_per_node(comfy_dirs, scene_image, tiny_segmenters, loads, monkeypatch):
    from comfyui_midi.midi_model.segmentation import grounding_dino, sam_loader
    from comfyui_midi.nodes import segment

    assert not hasattr(segment, "_cache")                        # no module-level cache ComfyUI cannot evict
    reads = {"sam": 0, "dino": 0}
    load_sam, load_dino = sam_loader.load_sam, grounding_dino.load_grounding_dino

    def counted(kind, fn):
        def wrapper(*a, **k):
            reads[kind] += 1
            return fn(*a, **k)
        return wrapper
    monkeypatch.setattr(sam_loader, "load_sam", counted("sam", load_sam))
    monkeypatch.setattr(grounding_dino, "load_grounding_dino", counted("dino", load_dino))

    image = scene_image[:, :192].contiguous()  # tiny Grounding DINO: see test_text_workflows_run_with_tiny_segmenters
    node = M["SegmentScene"]()
    text = dict(prompt="chair. table", sam_model=tiny_segmenters["sam"], grounding_dino=tiny_segmenters["dino"],
                box_threshold=0.0, text_threshold=0.0, max_instances=2, too_many="keep_first", min_area=0.0)
    node.segment(image, "text", **text)
    node.segment(image, "boxes", boxes="10,10,90,90", sam_model=tiny_segmenters["sam"], min_area=0.0)
    assert reads == {"sam": 1, "dino": 1}                        # the node keeps them between runs
    sam_model, sam_manager = node._models["sam"][1:3]
    dino_model, dino_manager = node._models["dino"][1:3]
    assert sam_manager.module is sam_model and dino_manager.module is dino_model.model
    assert loads == [(["sam", "grounding_dino"], max(memory.sam_bytes(sam_model), memory.grounding_dino_bytes(dino_model.model))),
                     (["sam"], memory.sam_bytes(sam_model))]
    assert memory.sam_bytes(sam_model) > 0 and memory.grounding_dino_bytes(dino_model.model) > 0
    M["SegmentScene"]().segment(image, "boxes", boxes="10,10,90,90", sam_model=tiny_segmenters["sam"], min_area=0.0)
    assert reads["sam"] == 2                                     # another node: its own (no shared cache)
