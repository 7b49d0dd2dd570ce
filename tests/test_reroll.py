"""Per-object control on the golden tiny checkpoint: record a run, keep some objects exactly,
re-roll / add / remove the others (library, CPU float32: equalities are bit for bit)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midi_model import trajectory as traj
from midi_model.errors import MIDIInputError
from midi_model.mesh_cache import MeshCache
from midi_model.sampling import initial_noise, scene_noise

STEPS = 2


@pytest.fixture(scope="module")
def cond(golden_pipe, golden):
    masks = np.stack([golden["inputs_seg"] == i for i in golden["instance_ids"]])
    return golden_pipe.encode(golden["inputs_rgb"], masks)


@pytest.fixture(scope="module")
def run1(golden_pipe, cond):
    return golden_pipe.sample_recorded(cond, seed=42, steps=STEPS)


@pytest.fixture(scope="module")
def reroll2(golden_pipe, cond, run1):
    return golden_pipe.resample(cond, run1, reroll=[1], seed=7)


def test_recording_is_the_plain_run_step_by_step(golden_pipe, cond, run1):
    n, cfg = cond.num_instances, golden_pipe.transformer.config
    assert run1.latents.shape == (STEPS + 1, n, cfg.num_tokens, cfg.in_channels)
    assert torch.equal(run1.latents[0], initial_noise(n, cfg.num_tokens, cfg.in_channels, 42))
    assert torch.equal(run1.final, golden_pipe.sample(cond, seed=42, steps=STEPS))
    assert run1.nbytes == n * (STEPS + 1) * cfg.num_tokens * cfg.in_channels * 4


def test_rerolled_object_changes_kept_objects_stay_exact(reroll2, run1, golden_pipe, cond):
    assert reroll2.sources == [0, None, 2]
    assert torch.equal(reroll2.latents[:, [0, 2]], run1.latents[:, [0, 2]])  # every step, bit for bit
    assert (reroll2.final[1] - run1.final[1]).abs().max() > 0.1
    again = golden_pipe.resample(cond, run1, reroll=[1], seed=7)
    assert torch.equal(again.latents, reroll2.latents)  # deterministic for its seed
    other = golden_pipe.resample(cond, run1, reroll=[1], seed=8)
    assert not torch.equal(other.final[1], reroll2.final[1])


def test_reroll_with_the_recorded_seed_reproduces_the_recording(golden_pipe, cond, run1):
    # object 2 sees the kept objects exactly as the recorded run did at every step (no step shift)
    same = golden_pipe.resample(cond, run1, reroll=[1], seed=42)
    assert torch.equal(same.latents, run1.latents)


def test_every_object_kept_reproduces_the_recording(golden_pipe, cond, run1):
    calls = []
    kept = golden_pipe.resample(cond, run1, reroll=[], seed=7, callback=lambda i, n: calls.append(i))
    assert torch.equal(kept.latents, run1.latents) and kept.sources == [0, 1, 2]
    assert calls == []  # nothing to sample


def test_no_object_kept_is_a_fresh_run_of_that_seed(golden_pipe, cond, run1):
    fresh = golden_pipe.resample(cond, run1, reroll=[0, 1, 2], seed=7)
    assert torch.equal(fresh.latents, golden_pipe.sample_recorded(cond, seed=7, steps=STEPS).latents)


def test_rerolled_object_attends_to_the_kept_ones(golden_pipe, cond, run1):
    """The same re-roll next to two different recordings gives two different objects; with the
    multi-instance blocks switched off it would give the same one (the check can fail)."""
    run_b = golden_pipe.sample_recorded(cond, seed=1234, steps=STEPS)
    a = golden_pipe.resample(cond, run1, reroll=[1], seed=7).final[1]
    b = golden_pipe.resample(cond, run_b, reroll=[1], seed=7).final[1]
    assert (a - b).abs().max() > 1e-3
    mi = [b.attn1 for b in golden_pipe.transformer.blocks if b.attn1.use_mi]
    assert len(mi) == 5
    try:  # bypass: every object attends to itself only
        for m in mi:
            m.use_mi = False
        a0 = golden_pipe.resample(cond, run1, reroll=[1], seed=7).final[1]
        b0 = golden_pipe.resample(cond, run_b, reroll=[1], seed=7).final[1]
    finally:
        for m in mi:
            m.use_mi = True
    assert torch.equal(a0, b0)
    other = golden_pipe.run_settings(STEPS, 7.0)
    other["model"]["mi_blocks"] = []
    with pytest.raises(MIDIInputError, match="the model .* differs from the recorded run's"):
        traj.plan(run1, cond, other, reroll=[1])


def test_add_an_object_next_to_kept_ones(golden_pipe, cond):
    two = traj.select_objects(cond, [0, 2])
    rec = golden_pipe.sample_recorded(two, seed=3, steps=STEPS)
    with pytest.raises(MIDIInputError, match=r"object 2 is not in the recording.*--add"):
        golden_pipe.resample(cond, rec, seed=5)
    added = golden_pipe.resample(cond, rec, seed=5, allow_new=True)
    assert added.sources == [0, None, 1]
    assert torch.equal(added.latents[:, [0, 2]], rec.latents)
    assert not torch.equal(added.final[1], torch.zeros_like(added.final[1]))


def test_remove_an_object_keeps_the_rest_untouched(golden_pipe, cond, run1):
    calls = []
    rest = golden_pipe.resample(cond, run1, remove=[1], seed=9, callback=lambda i, n: calls.append(i))
    assert rest.inputs == [0, 2] and rest.sources == [0, 2] and calls == []
    assert torch.equal(rest.latents, run1.latents[:, [0, 2]])
    # removing one and re-rolling another: the re-rolled one is sampled next to the remaining one
    both = golden_pipe.resample(cond, run1, remove=[1], reroll=[2], seed=9)
    assert both.sources == [0, None] and torch.equal(both.latents[:, 0], run1.latents[:, 0])


def test_other_inputs_or_settings_are_refused(golden_pipe, cond, run1):
    with pytest.raises(MIDIInputError, match="steps is 3 but the recorded run used 2"):
        golden_pipe.resample(cond, run1, reroll=[1], steps=3)
    with pytest.raises(MIDIInputError, match="guidance is 5.0 but the recorded run used 7.0"):
        golden_pipe.resample(cond, run1, reroll=[1], guidance_scale=5.0)
    other = traj.select_objects(cond, [0, 1, 2])
    other.scene_rgb = other.scene_rgb.copy()
    other.scene_rgb[0, 0] ^= 1
    with pytest.raises(MIDIInputError, match="the image differs"):
        golden_pipe.resample(other, run1, reroll=[1])
    moved = traj.select_objects(cond, [0, 1, 2])
    moved.instance_mask = moved.instance_mask.copy()
    moved.instance_mask[1] = np.roll(moved.instance_mask[1], 3, axis=0)
    with pytest.raises(MIDIInputError, match=r"recorded object\(s\) \[2\] are not among the inputs"):
        golden_pipe.resample(moved, run1, reroll=[1])
    with pytest.raises(MIDIInputError, match="both re-rolled and removed"):
        golden_pipe.resample(cond, run1, reroll=[1], remove=[1])
    with pytest.raises(MIDIInputError, match="every object is removed"):
        golden_pipe.resample(cond, run1, remove=[0, 1, 2])


def test_parse_objects_by_number_or_label():
    assert traj.parse_objects("2", 3) == [1]
    assert traj.parse_objects(" 3, 1 ", 3) == [0, 2]
    assert traj.parse_objects("chair", 3, labels="table, chair, chair") == [1, 2]
    assert traj.parse_objects("", 3) == []
    # a label as shown or as the scene's node name made of it
    seg = ["seg 29", "seg 76", "seg 150"]
    assert traj.parse_objects("seg_29, SEG 150", 3, labels=seg) == [0, 2]
    assert traj.parse_objects("椅子", 2, labels=["桌子", "椅子"]) == [1]  # a label with no node-name form
    with pytest.raises(MIDIInputError, match=r"from 1 to 2 or their names \(1 桌子, 2 椅子\)"):
        traj.parse_objects("sofa", 2, labels=["桌子", "椅子"])  # listed as shown: no node-name form
    with pytest.raises(MIDIInputError, match=r"'\?': give object numbers from 1 to 3 or their names \(1 a, 3 b\)$"):
        traj.parse_objects("?", 3, labels=["a", "", "b"])  # nothing left of it to name an object
    with pytest.raises(MIDIInputError, match="numbered from 1 to 3"):
        traj.parse_objects("0", 3)
    with pytest.raises(MIDIInputError, match="numbered from 1 to 3"):
        traj.parse_objects("4", 3)
    with pytest.raises(MIDIInputError, match=r"their names \(1 table, 2 chair, 3 chair\)"):
        traj.parse_objects("sofa", 3, labels="table, chair, chair")


def test_object_seeds_give_an_object_its_own_draw():
    a = scene_noise(3, 8, 4, seed=1, object_seeds={1: 7})
    b = scene_noise(5, 8, 4, seed=2, object_seeds={3: 7})
    assert torch.equal(a[1], b[3])
    plain = initial_noise(3, 8, 4, 1)
    assert torch.equal(a[[0, 2]], plain[[0, 2]]) and not torch.equal(a[1], plain[1])
    assert torch.equal(scene_noise(3, 8, 4, seed=1), plain)  # the default draw is the official one
    with pytest.raises(ValueError, match="object 4"):
        scene_noise(3, 8, 4, seed=1, object_seeds={3: 1})


def test_recording_round_trips_through_npz(run1, reroll2, tmp_path):
    for rec in (run1, reroll2):
        path = tmp_path / f"{id(rec)}.npz"
        np.savez(path, **rec.to_arrays())
        back = traj.Recording.load(path)
        assert torch.equal(back.latents, rec.latents) and back.info() == rec.info()
    np.savez(tmp_path / "plain.npz", final_latents=np.zeros(3))
    with pytest.raises(MIDIInputError, match="holds no recorded trajectory"):
        traj.Recording.load(tmp_path / "plain.npz")
    with pytest.raises(MIDIInputError, match="no such file"):
        traj.Recording.load(tmp_path / "missing.npz")


def test_kept_objects_decode_is_reused(golden_pipe, run1, reroll2):
    cache = MeshCache()
    kw = dict(octree_depth=4, decoder="dense")
    first, reused = golden_pipe.decode_reusing(run1.final, cache, **kw)
    assert reused == 0
    second, reused = golden_pipe.decode_reusing(reroll2.final, cache, **kw)
    assert reused == 2  # objects 1 and 3 kept: not decoded again
    for k in (0, 2):
        np.testing.assert_array_equal(second[k].vertices, first[k].vertices)
        np.testing.assert_array_equal(second[k].faces, first[k].faces)
    plain = golden_pipe.decode(reroll2.final[1:2], **kw)[0]
    np.testing.assert_array_equal(second[1].vertices, plain.vertices)
    other, reused = golden_pipe.decode_reusing(reroll2.final, cache, octree_depth=5, decoder="dense")
    assert reused == 0  # other settings: decoded anew
    _, reused = golden_pipe.decode_reusing(reroll2.final, cache, reusable=[False, False, True], **kw)
    assert reused == 1  # only where allowed
