"""MIDI (Multi-Instance Diffusion) in native PyTorch: image + instance masks -> 3D scene.

No ComfyUI import anywhere in this package; ComfyUI nodes live in ``nodes/``.
"""
__version__ = "0.1.0"
