"""ComfyUI nodes of the MIDI pack: thin adapters over ``midi_model``.

``host.py`` is the only module that imports ComfyUI; everything here also runs without it.
"""
from .decode import DecodeToMeshes
from .encode import EncodeMultiInstanceCondition
from .loader import LoadMIDIModel
from .reroll import MIDIRerollObjects
from .sampler import MIDISampler
from .scene import SaveMIDIScene
from .segment import SegmentScene

NODE_CLASS_MAPPINGS = {
    "LoadMIDIModel": LoadMIDIModel,
    "SegmentScene": SegmentScene,
    "EncodeMultiInstanceCondition": EncodeMultiInstanceCondition,
    "MIDISampler": MIDISampler,
    "MIDIRerollObjects": MIDIRerollObjects,
    "DecodeToMeshes": DecodeToMeshes,
    "SaveMIDIScene": SaveMIDIScene,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadMIDIModel": "Load MIDI Model",
    "SegmentScene": "Segment Scene",
    "EncodeMultiInstanceCondition": "Encode Multi-Instance Condition",
    "MIDISampler": "MIDI Sampler",
    "MIDIRerollObjects": "MIDI Re-roll Objects",
    "DecodeToMeshes": "Decode To Meshes",
    "SaveMIDIScene": "Save MIDI Scene",
}
