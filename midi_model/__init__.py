"""MIDI (Multi-Instance Diffusion) in native PyTorch: image + instance masks -> 3D scene.

No ComfyUI import anywhere in this package; ComfyUI nodes live in ``nodes/``.

    from midi_model import MIDIPipeline
    pipe = MIDIPipeline.from_pretrained("MIDI-3D", device="cuda", dtype="auto")
    meshes = pipe(image, masks, seed=42)
"""
__version__ = "0.1.0"

__all__ = ["MIDIPipeline", "MIDIConditioning", "MIDIError", "MIDIInputError", "MIDILoadError"]


def __getattr__(name):
    # lazy, so `import midi_model` (and the errors) do not import torch; the CLI's parser does
    if name == "MIDIPipeline":
        from .pipeline import MIDIPipeline
        return MIDIPipeline
    if name == "MIDIConditioning":
        from .conditioning import MIDIConditioning
        return MIDIConditioning
    if name in ("MIDIError", "MIDIInputError", "MIDILoadError"):
        from . import errors
        return getattr(errors, name)
    raise AttributeError(name)
