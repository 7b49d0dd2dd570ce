"""ComfyUI-MIDI: single image -> compositional 3D scene with MIDI (Multi-Instance Diffusion).

ComfyUI imports this folder as a package and reads the two mappings below. The workflows in
``workflows/`` appear in ComfyUI's template browser under this pack.
"""
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain module, not as a package: pytest does this to a checkout whose
    # folder name is no Python identifier (e.g. "ComfyUI-MIDI"). There is no node to offer then.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

# the editor extension (web/js/segment_scene_modes.js): Segment Scene shows only its mode's widgets
WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
