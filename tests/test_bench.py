"""The benchmark runs and reports what docs/benchmarks.md quotes (structure only: no timing
is asserted; speed is measured by running it, see docs/benchmarks.md)."""
from __future__ import annotations

import pytest


def test_bench_run_reports_both_paths_and_the_median_of_repeated_fast_runs(capsys):
    from bench import run

    res = run.main(["--preset", "tiny", "--instances", "2", "--steps", "1", "--depth", "6", "--device", "cpu",
                    "--exact", "full", "--repeat", "3"])
    assert len(res["fast_runs_total_s"]) == 3
    fast = sum(res["stages"][f"fast_{s}"]["s"] for s in ("encode", "sample", "decode"))
    assert res["fast_total_s"] == pytest.approx(fast, abs=2e-3)
    assert res["fast_total_s"] == sorted(res["fast_runs_total_s"])[1]  # the median run
    assert res["meshes"]["faces_equal"] and res["meshes"]["max_vertex_diff"] == 0.0
    assert res["speedup_total"] == pytest.approx(res["exact_total_s"] / res["fast_total_s"], rel=1e-2)
    assert 0 < res["points_queried"] < res["dense_points_official"]
    assert '"fast_runs_total_s"' in capsys.readouterr().out


def test_bench_query_time_is_wall_time_with_parallel_query_streams():
    """On two threads the fast path's CPU queries run in two streams at once: the bench counts the
    wall time while any runs, not the sum of the queries' times (which could exceed the decode)."""
    import torch

    from bench import run

    before = torch.get_num_threads()
    try:
        res = run.main(["--preset", "tiny", "--instances", "1", "--steps", "1", "--depth", "6", "--device", "cpu",
                        "--exact", "skip", "--threads", "2"])
    finally:
        torch.set_num_threads(before)
    stage = res["stages"]["fast_decode"]
    assert res["threads"] == 2
    assert 0 < stage["queries_s"] <= stage["grids_s"]


def test_bench_run_refuses_no_runs():
    from bench import run

    with pytest.raises(SystemExit):
        run.main(["--repeat", "0"])


def test_bench_exact_path_reads_the_checkpoint_in_float32_when_the_fast_path_is_bf16(shared_dir, monkeypatch):
    """With --model and a half-precision fast path, the exact path loads the checkpoint again in
    float32 (not the fast path's rounded weights upcast), and the fast runs after it stay bf16."""
    import torch

    from bench import run

    loads = []
    real = run.MIDIPipeline.from_pretrained

    def spy(root, **kw):
        pipe = real(root, **kw)
        loads.append((kw.get("dtype"), pipe))
        return pipe
    monkeypatch.setattr(run.MIDIPipeline, "from_pretrained", spy)
    ex = shared_dir / "data" / "examples" / "Realistic-Style"
    res = run.main(["--model", str(shared_dir / "golden" / "midi_tiny"), "--image", str(ex / "01_rgb.png"),
                    "--seg", str(ex / "01_seg.png"), "--instances", "1", "--steps", "1", "--depth", "5",
                    "--device", "cpu", "--dtype", "bf16", "--exact", "full", "--repeat", "2"])
    assert [d for d, _ in loads] == [torch.bfloat16, torch.float32]
    assert next(loads[0][1].vae.parameters()).dtype == torch.bfloat16  # after the exact path too
    assert res["fast_dtype"] == "bfloat16" and len(res["fast_runs_total_s"]) == 2
    assert 1e-4 < res["latent_rel_err_vs_exact"] < 0.05


def test_bench_official_without_the_official_code_is_one_clear_error(tmp_path):
    """bench.official needs a checkout of the official repo: a folder without it is refused, naming the fix,
    before anything loads (exit code 2 and one error line, as the CLI)."""
    import subprocess
    import sys

    from conftest import ROOT

    p = subprocess.run([sys.executable, "-m", "bench.official", "--official-src", str(tmp_path), "--model", "m",
                        "--image", "i.png", "--seg", "s.png"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"error: --official-src {tmp_path}: no midi/pipelines/pipeline_midi.py there: clone "
                                "https://github.com/VAST-AI-Research/MIDI-3D and pass its folder")
