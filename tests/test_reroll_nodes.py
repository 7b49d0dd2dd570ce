"""MIDI Re-roll Objects in a node chain (no ComfyUI): kept objects exact and not decoded again."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes_fixtures import *  # noqa: F401,F403  (fixtures)

from comfyui_midi import nodes
from comfyui_midi.midi_model.errors import MIDIInputError

M = nodes.NODE_CLASS_MAPPINGS
STEPS = 2


@pytest.fixture(scope="module")
def chain(midi_model, scene_image, seg_image):
    masks, _, labels = M["SegmentScene"]().segment(scene_image, "label_map", max_instances=3, too_many="keep_first",
                                                   seg_map=seg_image)
    cond, _ = M["EncodeMultiInstanceCondition"]().encode(midi_model, scene_image, masks, False)
    (lat,) = M["MIDISampler"]().sample(midi_model, cond, 42, STEPS, 7.0)
    return cond, lat, labels


def _items(mesh):
    return [(mesh.vertices[i, :int(mesh.vertex_counts[i])].numpy(), mesh.faces[i, :int(mesh.face_counts[i])].numpy())
            for i in range(mesh.vertices.shape[0])]


def test_sampler_output_holds_the_trajectory(chain, midi_model):
    cond, lat, _ = chain
    rec = lat["recording"]
    assert rec.latents.shape[:2] == (STEPS + 1, 3)
    assert torch.equal(rec.final, lat["samples"])


def test_reroll_node_keeps_objects_and_reuses_their_decode(chain, midi_model, monkeypatch, progress_log):
    cond, lat, labels = chain
    decoded = []
    pipe_cls = type(midi_model.pipe)
    real = pipe_cls.decode
    monkeypatch.setattr(pipe_cls, "decode", lambda self, latents, *a, **k: decoded.append(latents.shape[0])
                        or real(self, latents, *a, **k))
    (mesh1,) = M["DecodeToMeshes"]().decode(midi_model, lat, 4, "progressive", True)
    progress_log.clear()
    node = M["MIDIRerollObjects"]()
    lat2, labels2 = node.reroll(midi_model, cond, lat, "2", 7)
    assert progress_log == [(1, STEPS), (2, STEPS)]
    assert labels2 == ""
    rec1, rec2 = lat["recording"], lat2["recording"]
    assert torch.equal(rec2.latents[:, [0, 2]], rec1.latents[:, [0, 2]])
    assert (rec2.final[1] - rec1.final[1]).abs().max() > 0.1
    (mesh2,) = M["DecodeToMeshes"]().decode(midi_model, lat2, 4, "progressive", True)
    assert decoded == [3, 1]  # the re-roll decodes only the re-rolled object
    # the other order (ComfyUI may run the re-roll's decode first): the recorded run reuses the kept meshes
    lat_b, _ = node.reroll(midi_model, cond, lat, "3", 11)
    (mesh_b,) = M["DecodeToMeshes"]().decode(midi_model, lat_b, 5, "progressive", True)
    (mesh_a,) = M["DecodeToMeshes"]().decode(midi_model, lat, 5, "progressive", True)
    assert decoded == [3, 1, 3, 1]
    assert np.array_equal(_items(mesh_a)[0][0], _items(mesh_b)[0][0])
    plain = {"samples": lat["samples"]}  # latents without a recording are always decoded
    M["DecodeToMeshes"]().decode(midi_model, plain, 5, "progressive", True)
    assert decoded == [3, 1, 3, 1, 3]
    a, b = _items(mesh1), _items(mesh2)
    for k in (0, 2):
        np.testing.assert_array_equal(b[k][0], a[k][0])
        np.testing.assert_array_equal(b[k][1], a[k][1])
    # by label, chained on the re-roll's output; the same label + seed gives the same object
    lat3, _ = node.reroll(midi_model, cond, lat, "seg 76", 7, labels=labels)
    assert torch.equal(lat3["samples"], lat2["samples"])


def test_reroll_node_remove_add_and_seeds(chain, midi_model, scene_image, seg_image):
    cond, lat, labels = chain
    node = M["MIDIRerollObjects"]()
    lat_r, lab_r = node.reroll(midi_model, cond, lat, "", 7, remove="2", labels=labels)
    assert lab_r == "seg 29, seg 150"
    assert torch.equal(lat_r["samples"], lat["samples"][[0, 2]])
    a, _ = node.reroll(midi_model, cond, lat, "1, 3", 7, per_object_seed=True)
    b, _ = node.reroll(midi_model, cond, lat, "1, 3", 7)
    assert not torch.equal(a["samples"][0], b["samples"][0])
    assert torch.equal(a["samples"][1], lat["samples"][1])
    masks, _, _ = M["SegmentScene"]().segment(scene_image, "label_map", max_instances=2, too_many="keep_first",
                                              seg_map=seg_image)
    cond2, _ = M["EncodeMultiInstanceCondition"]().encode(midi_model, scene_image, masks, False)
    (lat_two,) = M["MIDISampler"]().sample(midi_model, cond2, 5, STEPS, 7.0)
    with pytest.raises(MIDIInputError, match="object 3 is not in the recording"):
        node.reroll(midi_model, cond, lat_two, "", 7)
    added, _ = node.reroll(midi_model, cond, lat_two, "", 7, add_new=True)
    assert torch.equal(added["recording"].latents[:, :2], lat_two["recording"].latents)


def test_reroll_node_errors(chain, midi_model):
    cond, lat, labels = chain
    node = M["MIDIRerollObjects"]()
    with pytest.raises(MIDIInputError, match="hold no trajectory"):
        node.reroll(midi_model, cond, {"samples": lat["samples"]}, "2", 7)
    with pytest.raises(MIDIInputError, match="reroll 'sofa'"):
        node.reroll(midi_model, cond, lat, "sofa", 7, labels=labels)
    with pytest.raises(MIDIInputError, match="reroll 4: objects are numbered from 1 to 3"):
        node.reroll(midi_model, cond, lat, "4", 7)


def test_reroll_workflow_runs_as_shipped(comfy_dirs):
    """workflows/Reroll objects in a 3D scene.json, as shipped except the tiny model's CPU speed (2 steps, depth 4):
    the 'after' scene keeps objects 1 and 3 of the 'before' scene exactly and re-rolls object 2."""
    import trimesh
    from test_workflows import REROLL_WF, Preview3D, convert, run_api

    Preview3D.SHOWN.clear()
    wf, api = convert(REROLL_WF, comfy_dirs)   # the pack's example scene (bedroom)
    by = {n["class_type"]: n["inputs"] for n in api.values()}
    assert by["MIDIRerollObjects"]["reroll"] == "2" and by["MIDIRerollObjects"]["seed"] == 7
    assert by["MIDISampler"]["steps"] == 50 and by["LoadMIDIModel"]["model"] == "MIDI-3D"
    assert isinstance(by["MIDIRerollObjects"]["recorded"], list) and isinstance(by["MIDIRerollObjects"]["labels"], list)
    for n in api.values():
        if n["class_type"] == "MIDISampler":
            n["inputs"]["steps"] = STEPS
        if n["class_type"] == "DecodeToMeshes":
            n["inputs"]["octree_depth"] = 4
    run_api(api)
    assert len(Preview3D.SHOWN) == 2
    shown = {p.split("/")[-1].split("_")[1]: p for p in Preview3D.SHOWN}  # midi/reroll_before_00001_.glb
    before, after = (trimesh.load(comfy_dirs / "output" / shown[k]) for k in ("before", "after"))
    assert sorted(before.geometry) == sorted(after.geometry) == ["seg_150", "seg_29", "seg_76"]
    for name in ("seg_29", "seg_150"):
        np.testing.assert_array_equal(after.geometry[name].vertices, before.geometry[name].vertices)
    a, b = after.geometry["seg_76"].vertices, before.geometry["seg_76"].vertices
    assert a.shape != b.shape or not np.array_equal(a, b)
