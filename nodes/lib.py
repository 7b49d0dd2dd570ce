"""Access to the ``midi_model`` library from the nodes.

Inside ComfyUI the pack is imported as a package (``<pack>.nodes``), so the library is its
sibling ``<pack>.midi_model``; in tests and scripts it is the top-level ``midi_model``.
No ``sys.path`` changes, so another pack's modules can never shadow ours.
"""
from __future__ import annotations

import importlib

_parent = (__package__ or "").rpartition(".")[0]
_BASE = None


def _base() -> str:
    global _BASE
    if _BASE is None:
        _BASE = "midi_model"
        if _parent:
            try:
                importlib.import_module(f"{_parent}.midi_model")
                _BASE = f"{_parent}.midi_model"
            except ImportError:
                pass
    return _BASE


def lib(name: str):
    """``lib("pipeline")`` -> the ``midi_model.pipeline`` module of this pack."""
    return importlib.import_module(f"{_base()}.{name}")
