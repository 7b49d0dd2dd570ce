"""bench/gpu_check.sh, the prepared GPU run, in its dry-run form on the CPU (tiny preset): every
stage ends, writes the JSON the GPU figures are read from, and the summary says so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, *stages, **env):
    env = {**os.environ, "OUT": str(tmp_path), "PRESET": "tiny", "DEVICE": "cpu", "STEPS": "1", "DEPTH": "4",
           "HALF": "bf16", "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", "bench/gpu_check.sh", *stages], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_dry_run_writes_every_stage(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["n5", "n7", "fp16"]
    assert all(": exit 0 in " in line for line in summary), summary
    n5, n7, half = (json.loads((tmp_path / f"{s}.json").read_text()) for s in ("n5", "n7", "fp16"))
    assert n5["instances"] == 5 and n5["speedup_total"] > 0 and n5["meshes"]["faces_equal"]
    assert n7["instances"] == 7 and "exact_total_s" not in n7
    assert half["fast_dtype"] == "bfloat16" and 0 < half["latent_rel_err_vs_exact"] < 0.1
    assert half["stages"]["exact_decode"]["estimated"]
    assert "torch" in (tmp_path / "device.txt").read_text()


def test_unknown_stage_is_refused(tmp_path):
    r = _run(tmp_path, "n9")
    assert r.returncode == 2 and "unknown stage n9 (n5, n7, fp16)" in r.stdout
