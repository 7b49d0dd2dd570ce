"""ComfyUI-MIDI: single image -> compositional 3D scene with MIDI (Multi-Instance Diffusion).

ComfyUI imports this folder as a package and reads the two mappings below. The workflows in
``workflows/`` appear in ComfyUI's template browser under this pack.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
