"""Shared fixtures: the ../shared folder (golden run, examples) and a loaded golden pipeline."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The node pack, imported as a package the way ComfyUI imports a custom-node folder (its nodes use
# relative imports: ``nodes`` and ``midi_model`` are subpackages of the pack). The folder name
# (e.g. "ComfyUI-MIDI") is no identifier, so the package gets this name; tests of the nodes
# import ``comfyui_midi.nodes`` and the pack's own ``comfyui_midi.midi_model``.
PACK = "comfyui_midi"


def import_pack(name: str):
    """Import the pack folder as package ``name``, as ComfyUI does (spec_from_file_location on its
    ``__init__.py``, the module registered in sys.modules before it runs)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def pack_imported_as(name: str):
    """A second copy of the pack under ``name`` (e.g. a path-like name), removed from sys.modules after."""
    try:
        yield import_pack(name)
    finally:
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]


def assert_close(name, ours, ref, tol=1e-5):
    """ours (tensor or array) against a golden array: same shape, max abs error <= tol x max(1, |ref|max)
    (an absolute bound scaled by the array's magnitude: latents grow to ~10 over the steps)."""
    ours = ours.detach().float().cpu().numpy() if torch.is_tensor(ours) else np.asarray(ours)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    bound = tol * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= bound, f"{name}: max abs error {err:.3e} > {bound:.3e}"


if PACK not in sys.modules:
    import_pack(PACK)

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
