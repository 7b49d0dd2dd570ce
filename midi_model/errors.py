"""Errors a user can cause. Each message names the input and what to do about it.

All are ``MIDIError`` (a ``ValueError``): the CLI prints them as one line, ComfyUI shows
them in the node. Out of memory keeps its own type (also a ``torch.OutOfMemoryError``, so a
host that frees memory on OOM still recognises it).
"""
from __future__ import annotations


class MIDIError(ValueError):
    """Base class: one clear, one-line message for the user."""


class MIDILoadError(MIDIError):
    """A model folder or weight file cannot be loaded as asked."""


class MIDIInputError(MIDIError):
    """An image, mask, seg map or setting cannot be used as given."""


class MIDIOutputError(MIDIError):
    """An output file cannot be written where asked (exists, folder not writable, disk full)."""


def __getattr__(name):
    # built on first use, so importing the errors does not import torch
    if name == "MIDIOutOfMemoryError":
        try:
            from torch import OutOfMemoryError as base
        except ImportError:
            base = MemoryError

        cls = type("MIDIOutOfMemoryError", (MIDIError, base), {
            "__doc__": "A stage ran out of device memory; the message names the setting that lowers it.",
            "__module__": __name__})
        globals()[name] = cls
        return cls
    raise AttributeError(name)
