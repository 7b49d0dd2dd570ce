"""The headless main job: python -m midi_model generate, on the golden checkpoint and example."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import ROOT
from midi_model.__main__ import main


@pytest.fixture(scope="module")
def cli_run(golden_model_dir, examples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    ex = examples_dir / "Realistic-Style"
    argv = ["generate", "--model", str(golden_model_dir), "--image", str(ex / "01_rgb.png"),
            "--seg", str(ex / "01_seg.png"), "--out", str(out / "scene.glb"), "--size", "256",
            "--max-instances", "3", "--seed", "42", "--steps", "4", "--guidance", "7.0",
            "--octree-depth", "5", "--decoder", "progressive", "--device", "cpu", "--dtype", "fp32",
            "--dump", str(out / "dump.npz"), "--dump-internals"]
    assert main(argv) == 0
    return out


def test_glb_has_three_named_meshes(cli_run, golden):
    scene = trimesh.load(str(cli_run / "scene.glb"))
    assert isinstance(scene, trimesh.Scene)
    names = sorted(scene.graph.nodes_geometry)
    assert names == ["seg_150", "seg_29", "seg_76"]
    for i, name in enumerate(["seg_29", "seg_76", "seg_150"]):
        assert len(scene.geometry[name].faces) == len(golden[f"mesh{i}_faces"])


def test_node_names_are_segment_scenes_labels(cli_run, examples_dir):
    # the same seg map names the objects alike in the CLI's GLB and in Segment Scene -> Save MIDI Scene
    from midi_model.scene import instance_names, load_scene_meshes
    from midi_model.segmentation import segment_scene

    ex = examples_dir / "Realistic-Style"
    rgb = np.asarray(Image.open(ex / "01_rgb.png").convert("RGB"))
    seg = np.asarray(Image.open(ex / "01_seg.png").convert("RGB"))  # as a Load Image node gives it
    labels = segment_scene(rgb, "label_map", seg=seg, max_instances=3).labels
    names, _ = load_scene_meshes(cli_run / "scene.glb")
    assert names == instance_names(3, labels) == ["seg_29", "seg_76", "seg_150"]


def test_dump_equals_golden(cli_run, golden):
    dump = np.load(cli_run / "dump.npz")
    skipped = {"vae_query_points", "vae_query_values"}  # only with --query-points
    for key in sorted(set(golden) - skipped):
        assert key in dump.files, f"dump lacks {key}"
        ref, ours = golden[key], dump[key]
        assert ours.shape == ref.shape, key
        if ref.dtype.kind in "iu":
            np.testing.assert_array_equal(ours, ref, err_msg=key)
        else:
            tol = 5e-5 if ("mesh" in key or "guided" in key) else 1e-5
            bound = tol * max(1.0, float(np.abs(ref).max()))
            assert np.abs(ours.astype(np.float64) - ref).max() <= bound, key


def test_query_points_dump(golden_model_dir, examples_dir, golden, tmp_path):
    np.save(tmp_path / "pts.npy", golden["vae_query_points"])
    ex = examples_dir / "Realistic-Style"
    argv = ["generate", "--model", str(golden_model_dir), "--image", str(ex / "01_rgb.png"),
            "--seg", str(ex / "01_seg.png"), "--out", str(tmp_path / "s.glb"), "--size", "256",
            "--max-instances", "3", "--steps", "4", "--octree-depth", "3", "--decoder", "dense",
            "--device", "cpu", "--query-points", str(tmp_path / "pts.npy"), "--dump", str(tmp_path / "d.npz")]
    assert main(argv) == 0
    d = np.load(tmp_path / "d.npz")
    # the CLI samples its own latents (within 1e-5 of the golden ones), then decodes there
    assert np.abs(d["vae_query_values"] - golden["vae_query_values"]).max() < 2e-5


def test_masks_input_equals_seg_input(golden_model_dir, examples_dir, tmp_path):
    seg = np.asarray(Image.open(examples_dir / "Realistic-Style/01_seg.png").convert("L").resize((64, 64), Image.NEAREST))
    ids = [i for i in np.unique(seg) if i][:2]
    paths = []
    for i in ids:
        p = tmp_path / f"m{i}.png"
        Image.fromarray(((seg == i) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    Image.fromarray(seg).save(tmp_path / "seg.png")
    common = ["generate", "--model", str(golden_model_dir), "--image", str(examples_dir / "Realistic-Style/01_rgb.png"),
              "--size", "64", "--steps", "1", "--octree-depth", "3", "--decoder", "dense", "--device", "cpu",
              "--max-instances", "2"]
    assert main(common + ["--masks", *paths, "--out", str(tmp_path / "a.glb"), "--dump", str(tmp_path / "a.npz")]) == 0
    assert main(common + ["--seg", str(tmp_path / "seg.png"), "--out", str(tmp_path / "b.glb"),
                          "--dump", str(tmp_path / "b.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["final_latents"], np.load(tmp_path / "b.npz")["final_latents"])


def test_existing_output_is_never_overwritten(golden_model_dir, examples_dir, tmp_path, capsys):
    out = tmp_path / "scene.glb"
    out.write_bytes(b"keep me")
    ex = examples_dir / "Realistic-Style"
    rc = main(["generate", "--model", str(golden_model_dir), "--image", str(ex / "01_rgb.png"),
               "--seg", str(ex / "01_seg.png"), "--out", str(out)])
    assert rc == 2
    assert out.read_bytes() == b"keep me"
    assert "already exists" in capsys.readouterr().err


def test_empty_seg_map_is_a_clear_error(golden_model_dir, examples_dir, tmp_path, capsys):
    Image.fromarray(np.zeros((1024, 1024), np.uint8)).save(tmp_path / "empty.png")
    rc = main(["generate", "--model", str(golden_model_dir), "--image", str(examples_dir / "Realistic-Style/01_rgb.png"),
               "--seg", str(tmp_path / "empty.png"), "--out", str(tmp_path / "x.glb")])
    assert rc == 2
    assert "no instance (all pixels are background 0)" in capsys.readouterr().err


def test_module_entry_point_runs_as_a_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "midi_model", "generate", "--model", str(tmp_path / "none"),
                        "--image", "x.png", "--seg", "y.png", "--out", str(tmp_path / "o.glb")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: --image x.png: no such file" in r.stderr
