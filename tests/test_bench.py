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


def test_bench_run_refuses_no_runs():
    from bench import run

    with pytest.raises(SystemExit):
        run.main(["--repeat", "0"])
