"""Shared fixtures: the ../shared folder (golden run, examples) and a loaded golden pipeline."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The test models are tiny: intra-op thread hand-offs cost more than they save, and on a
# busy 2-core machine two spinning threads slow 4 sampling steps from ~1 s to ~40 s.
torch.set_num_threads(int(os.environ.get("MIDI_TEST_THREADS", "1")))

SHARED = Path(os.environ.get("MIDI_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "golden"
GOLDEN_MODEL = GOLDEN / "midi_tiny"
EXAMPLES = SHARED / "data" / "examples"


def _require(path: Path) -> Path:
    # CI has ../shared beside the checkout; a missing one is a setup error, not a skip
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: put the shared folder beside the checkout or set MIDI_SHARED")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def golden_model_dir() -> Path:
    return _require(GOLDEN_MODEL)


@pytest.fixture(scope="session")
def golden():
    return dict(np.load(_require(GOLDEN / "reference_run.npz")))


@pytest.fixture(scope="session")
def golden_pipe(golden_model_dir):
    from midi_model.pipeline import MIDIPipeline

    return MIDIPipeline.from_pretrained(golden_model_dir, device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return _require(EXAMPLES)
