"""The CLI pair: --dump records a run, --keep-from ... --reroll 2 re-samples object 2 and keeps the others."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from midi_model.__main__ import main


@pytest.fixture(scope="module")
def common(golden_model_dir, examples_dir):
    ex = examples_dir / "Realistic-Style"
    return ["generate", "--model", str(golden_model_dir), "--image", str(ex / "01_rgb.png"),
            "--seg", str(ex / "01_seg.png"), "--size", "128", "--max-instances", "3", "--steps", "2",
            "--octree-depth", "4", "--decoder", "progressive", "--device", "cpu", "--dtype", "fp32"]


@pytest.fixture(scope="module")
def pair(common, tmp_path_factory):
    out = tmp_path_factory.mktemp("reroll_cli")
    assert main(common + ["--seed", "42", "--out", str(out / "scene1.glb"), "--dump", str(out / "run1.npz")]) == 0
    assert main(common + ["--keep-from", str(out / "run1.npz"), "--reroll", "2", "--seed", "7",
                          "--out", str(out / "scene2.glb"), "--dump", str(out / "run2.npz")]) == 0
    return out


def test_reroll_keeps_other_objects_bit_for_bit(pair):
    a, b = np.load(pair / "run1.npz"), np.load(pair / "run2.npz")
    mesh_keys = sorted(k for k in a.files if k.startswith("mesh"))
    assert mesh_keys == sorted(k for k in b.files if k.startswith("mesh")) and len(mesh_keys) == 6
    for i in (0, 2):
        for part in ("vertices", "faces"):
            np.testing.assert_array_equal(b[f"mesh{i}_{part}"], a[f"mesh{i}_{part}"])
        np.testing.assert_array_equal(b["trajectory"][:, i], a["trajectory"][:, i])
    assert np.abs(b["final_latents"][1] - a["final_latents"][1]).max() > 0.1
    assert a["trajectory"].shape[:2] == (3, 3)  # steps + 1, objects


def test_reroll_scene_has_all_objects(pair):
    s1, s2 = trimesh.load(str(pair / "scene1.glb")), trimesh.load(str(pair / "scene2.glb"))
    assert sorted(s1.graph.nodes_geometry) == sorted(s2.graph.nodes_geometry) == \
        ["seg_150", "seg_29", "seg_76"]
    for name in ("seg_29", "seg_150"):
        np.testing.assert_array_equal(s2.geometry[name].faces, s1.geometry[name].faces)


def test_kept_meshes_are_reused_and_chains(pair, common, capsys):
    # a re-roll of the re-roll: its dump is a recording too; only object 1 is decoded
    assert main(common + ["--keep-from", str(pair / "run2.npz"), "--reroll", "1", "--seed", "9",
                          "--out", str(pair / "scene3.glb"), "--dump", str(pair / "run3.npz")]) == 0
    err = capsys.readouterr().err
    assert "kept (object<-recorded): 2<-2, 3<-3; sampled: [1]" in err
    assert "reused the recorded meshes of 2 kept object(s)" in err
    b, c = np.load(pair / "run2.npz"), np.load(pair / "run3.npz")
    np.testing.assert_array_equal(c["mesh1_vertices"], b["mesh1_vertices"])


def test_remove_and_add(pair, common, golden_model_dir, capsys):
    # an object named as the scene names it (seg_76 is object 2)
    assert main(common + ["--keep-from", str(pair / "run1.npz"), "--remove", "seg_76",
                          "--out", str(pair / "removed.glb"), "--dump", str(pair / "removed.npz")]) == 0
    a, r = np.load(pair / "run1.npz"), np.load(pair / "removed.npz")
    assert list(r["instance_ids"]) == [29, 150]
    np.testing.assert_array_equal(r["mesh1_vertices"], a["mesh2_vertices"])
    two = [c if c != "3" else "2" for c in common]  # --max-instances 2: record the scene without object 3
    assert main(two + ["--out", str(pair / "two.glb"), "--dump", str(pair / "two.npz")]) == 0
    rc = main(common + ["--keep-from", str(pair / "two.npz"), "--out", str(pair / "x.glb")])
    assert rc == 2 and "object 3 is not in the recording" in capsys.readouterr().err
    assert main(common + ["--keep-from", str(pair / "two.npz"), "--add", "--seed", "3",
                          "--out", str(pair / "added.glb"), "--dump", str(pair / "added.npz")]) == 0
    t, d = np.load(pair / "two.npz"), np.load(pair / "added.npz")
    for i in range(2):
        np.testing.assert_array_equal(d[f"mesh{i}_vertices"], t[f"mesh{i}_vertices"])
        np.testing.assert_array_equal(d["trajectory"][:, i], t["trajectory"][:, i])
    assert d["trajectory"].shape[1] == 3


@pytest.mark.parametrize("change, message", [
    (["--steps", "3"], "steps is 3 but the recorded run used 2"),
    (["--size", "96"], "the image differs from the recorded run's"),
    (["--reroll", "5"], "--reroll 5: objects are numbered from 1 to 3"),
    (["--reroll", "chair"], "--reroll 'chair': give object numbers from 1 to 3 or their names "
                            "(1 seg_29, 2 seg_76, 3 seg_150)"),
])
def test_other_inputs_are_refused(pair, common, change, message, capsys):
    argv = list(common)
    for flag, value in zip(change[::2], change[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    out = pair / "refused.glb"
    assert main(argv + ["--keep-from", str(pair / "run1.npz"), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_reroll_needs_a_recording(common, tmp_path, capsys):
    assert main(common + ["--reroll", "2", "--out", str(tmp_path / "x.glb")]) == 2
    assert "--keep-from" in capsys.readouterr().err
