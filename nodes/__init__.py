"""ComfyUI nodes of the MIDI pack: thin adapters over ``midi_model``.

``host.py`` is the only module that imports ComfyUI; everything here also runs without it.
"""
from . import host
from .decode import DecodeToMeshes
from .encode import EncodeMultiInstanceCondition
from .examples import LoadMIDIExample
from .loader import LoadMIDIModel
from .reroll import MIDIRerollObjects
from .sampler import MIDISampler
from .scene import SaveMIDIScene
from .segment import SegmentScene
from .texture import AlignSceneToImage, BakeViews, RenderViews, TextureFromImage

NODE_CLASS_MAPPINGS = {
    "LoadMIDIExample": LoadMIDIExample,
    "LoadMIDIModel": LoadMIDIModel,
    "SegmentScene": SegmentScene,
    "EncodeMultiInstanceCondition": EncodeMultiInstanceCondition,
    "MIDISampler": MIDISampler,
    "MIDIRerollObjects": MIDIRerollObjects,
    "DecodeToMeshes": DecodeToMeshes,
    "SaveMIDIScene": SaveMIDIScene,
    "AlignSceneToImage": AlignSceneToImage,
    "TextureFromImage": TextureFromImage,
    "RenderViews": RenderViews,
    "BakeViews": BakeViews,
}

for _cls in NODE_CLASS_MAPPINGS.values():
    host.readable_errors(_cls)  # the UI shows 'MIDILoadError: <message>', not the pack's folder path

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadMIDIExample": "Load MIDI Example",
    "LoadMIDIModel": "Load MIDI Model",
    "SegmentScene": "Segment Scene",
    "EncodeMultiInstanceCondition": "Encode Multi-Instance Condition",
    "MIDISampler": "MIDI Sampler",
    "MIDIRerollObjects": "MIDI Re-roll Objects",
    "DecodeToMeshes": "Decode To Meshes",
    "SaveMIDIScene": "Save MIDI Scene",
    "AlignSceneToImage": "Align Scene To Image",
    "TextureFromImage": "Texture From Image",
    "RenderViews": "Render Views (MV-Adapter)",
    "BakeViews": "Bake Views",
}
