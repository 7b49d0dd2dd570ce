"""SegmentScene: scene IMAGE -> one MASK per object (MIDI's order) + preview + labels."""
from __future__ import annotations

import numpy as np
import torch

from . import host
from ..midi_model import inputs
from ..midi_model import errors, hub, memory

MODES = ["text", "boxes", "points", "automatic", "label_map", "masks"]
SAM_FOLDER = "sams"
DINO_FOLDER = "grounding-dino"
DINO_DEFAULT = "grounding-dino-tiny"
NO_SAM = "none"
TOO_MANY = ["error", "keep_first"]

host.register_model_folder(SAM_FOLDER)
host.register_model_folder(DINO_FOLDER)


def _load_sam(path):
    """-> (SAM, its manager, working memory). Read onto the offload device; ComfyUI moves it."""
    from ..midi_model.segmentation.sam_loader import load_sam

    sam = load_sam(path, device=host.offload_device())
    return sam, host.ManagedModule(sam, "sam"), memory.sam_bytes(sam)


def _load_dino(folder):
    from ..midi_model.segmentation.grounding_dino import load_grounding_dino

    det = load_grounding_dino(folder, device=host.offload_device())
    return det, host.ManagedModule(det.model, "grounding_dino"), memory.grounding_dino_bytes(det.model)


def sam_choices() -> list[str]:
    files = [f for f in host.list_files(SAM_FOLDER) if f.endswith((".pth", ".pt", ".safetensors", ".bin"))]
    return files + [NO_SAM]  # "none" always valid: label_map / masks workflows need no SAM


def dino_choices() -> list[str]:
    return host.list_subfolders(DINO_FOLDER) + [NO_SAM]  # only folders that exist; "none" for the other modes


# Which widgets each mode reads (the others are hidden in the editor by web/js/segment_scene_modes.js,
# which gets this table through the mode input's options). mode, max_instances, too_many and
# allow_more_instances apply to every mode.
WIDGETS_BY_MODE = {
    "text": ["prompt", "sam_model", "grounding_dino", "box_threshold", "text_threshold", "min_area"],
    "boxes": ["boxes", "sam_model", "min_area"],
    "points": ["points", "sam_model", "min_area"],
    "automatic": ["sam_model", "min_area"],
    "label_map": [],
    "masks": [],
}

SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
DINO_REPO = "IDEA-Research/grounding-dino-tiny"
SAM_MODES = ("text", "boxes", "points", "automatic")


def missing_models(mode: str, sam_model: str, grounding_dino: str) -> str | None:
    """What ``mode`` needs and is not installed, with how to get it; None when all is there."""
    if mode in SAM_MODES and (sam_model == NO_SAM or host.file_path(SAM_FOLDER, sam_model) is None):
        what = "a SAM checkpoint" if sam_model == NO_SAM else f"SAM checkpoint '{sam_model}' (not found)"
        return (f"Segment Scene: mode {mode} needs {what} in ComfyUI/models/{SAM_FOLDER}: download "
                f"{SAM_URL} into {host.model_folder_paths(SAM_FOLDER)[0]}, or use mode label_map / masks")
    if mode == "text" and host.find_subfolder(grounding_dino, DINO_FOLDER) is None:
        name = DINO_DEFAULT if grounding_dino == NO_SAM else grounding_dino
        what = "a Grounding DINO folder" if grounding_dino == NO_SAM else f"Grounding DINO folder '{name}' (not found)"
        cmd = hub.hf_download_command(host.default_download_dir(name, DINO_FOLDER), DINO_REPO)
        return (f"Segment Scene: mode text needs {what} in ComfyUI/models/{DINO_FOLDER}: download it with "
                f"`{cmd}`, or use mode boxes / points / automatic")
    return None


class SegmentScene:
    DESCRIPTION = ("Splits the scene into objects, one mask per object in MIDI's instance order. text: Grounding DINO "
                   "finds the named objects, SAM cuts them out. boxes / points: SAM from pixel prompts. automatic: SAM "
                   "everything mode. label_map: an existing seg map (one grey value or colour per object, 0 = "
                   "background; ascending value = MIDI's order). masks: an existing MASK batch.")
    CATEGORY = "MIDI"
    FUNCTION = "segment"
    RETURN_TYPES = ("MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("masks", "preview", "labels")
    OUTPUT_TOOLTIPS = ("One mask per object (N,H,W), disjoint, in instance order, for Encode Multi-Instance Condition.",
                       "The objects coloured over the image, to check the segmentation.",
                       "Object names, comma separated (connect to Save MIDI Scene's names).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The scene image (one image, not a batch)."}),
            "mode": (MODES, {"default": "text", "widgets_by_mode": WIDGETS_BY_MODE, "tooltip":
                     "text: name the objects. boxes / points: pixel prompts for SAM. automatic: SAM finds objects. "
                     "label_map: connect a seg map to seg_map. masks: connect a MASK batch to masks."}),
            "prompt": ("STRING", {"default": "", "multiline": False, "tooltip":
                       "mode text: the objects to find, separated by '.', e.g. 'sofa. table. lamp'."}),
            "boxes": ("STRING", {"default": "", "multiline": True, "tooltip":
                      "mode boxes: one box per object in pixels, 'x0,y0,x1,y1; x0,y0,x1,y1'."}),
            "points": ("STRING", {"default": "", "multiline": True, "tooltip":
                       "mode points: 'x,y[,label]; x,y | x,y' in pixels; '|' separates objects, label 1 = on the "
                       "object (default), 0 = not on it."}),
            "sam_model": (sam_choices(), {"tooltip":
                          "SAM checkpoint from ComfyUI/models/sams (e.g. sam_vit_b_01ec64.pth); needed by text, "
                          "boxes, points and automatic."}),
            "grounding_dino": (dino_choices(), {"default": NO_SAM, "tooltip":
                               "Grounding DINO folder (Hugging Face layout) in ComfyUI/models/grounding-dino, e.g. "
                               "IDEA-Research/grounding-dino-tiny; needed by mode text."}),
            "box_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                              "mode text: minimum detection score of a box (official 0.3). Lower finds more objects."}),
            "text_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                               "mode text: minimum score of the words that name a box's label."}),
            "max_instances": ("INT", {"default": 7, "min": 1, "max": 64, "tooltip":
                              "Most objects per scene. MIDI was trained with up to 7; more needs allow_more_instances."}),
            "too_many": (TOO_MANY, {"default": "error", "tooltip":
                         "When more objects are found than max_instances: stop with an error, or keep the first ones."}),
            "allow_more_instances": ("BOOLEAN", {"default": False, "tooltip":
                                     "Allow max_instances above 7 (quality may drop; memory grows with objects^2)."}),
            "min_area": ("FLOAT", {"default": 0.001, "min": 0.0, "max": 100000.0, "step": 0.0005, "tooltip":
                         "SAM modes: drop specks smaller than this (below 1: fraction of the image; 1 and above: "
                         "pixels)."}),
        }, "optional": {
            "seg_map": ("IMAGE", {"tooltip": "mode label_map: the seg map, same size as the image."}),
            "masks": ("MASK", {"tooltip": "mode masks: a MASK batch (N,H,W), one per object, same size as the image."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, mode, sam_model=NO_SAM, grounding_dino=NO_SAM):
        # replaces ComfyUI's combo check for these three: only the models the chosen mode uses must exist
        if mode not in MODES:
            return f"mode '{mode}': use one of {', '.join(MODES)}"
        return missing_models(mode, sam_model, grounding_dino) or True

    def __init__(self):
        # The SAM and Grounding DINO this node last used, under ComfyUI's model management (it moves
        # and offloads them like core models). Kept per graph node, as core's LoraLoader keeps its
        # file: ComfyUI drops them with the node (or on "free model and node cache").
        self._models = {}

    def _model(self, kind: str, key: str, load):
        hit = self._models.get(kind)
        if hit is None or hit[0] != key:
            self._models.pop(kind, None)  # release the previous one first
            hit = self._models[kind] = (key, *load(key))
        return hit[1:]

    def segment(self, image, mode, prompt="", boxes="", points="", sam_model=NO_SAM, grounding_dino=NO_SAM,
                box_threshold=0.3, text_threshold=0.3, max_instances=7, too_many="error",
                allow_more_instances=False, min_area=0.001, seg_map=None, masks=None):
        if mode not in MODES:
            raise errors.MIDIInputError(f"mode '{mode}': use one of {', '.join(MODES)}")
        from ..midi_model.segmentation.api import segment_scene  # segment_anything etc.: imported when used

        rgb = inputs.as_rgb_uint8(image, "image")
        kw = dict(box_threshold=float(box_threshold), text_threshold=float(text_threshold),
                  max_instances=int(max_instances), too_many=too_many,
                  allow_more_instances=bool(allow_more_instances), min_area=float(min_area))
        managed = []
        if mode == "label_map":
            if seg_map is None:
                raise errors.MIDIInputError("Segment Scene: mode label_map needs a seg map on the seg_map input")
            kw["seg"] = seg_map  # decoded and checked by the library's input layer
        elif mode == "masks":
            if masks is None:
                raise errors.MIDIInputError("Segment Scene: mode masks needs a MASK batch on the masks input")
            kw["masks"] = masks
        else:
            missing = missing_models(mode, sam_model, grounding_dino)
            if missing:
                raise errors.MIDILoadError(missing)
            if mode in SAM_MODES:
                kw["sam"], *m = self._model("sam", host.file_path(SAM_FOLDER, sam_model), _load_sam)
                managed.append(m)
            if mode == "text":
                kw["detector"], *m = self._model("dino", host.find_subfolder(grounding_dino, DINO_FOLDER), _load_dino)
                managed.append(m)
            kw.update(prompt=prompt, boxes=boxes or None, points=points or None)
        if managed:  # both fit at once: SAM runs right after the detector
            host.load_models([m for m, _ in managed], memory_required=max(need for _, need in managed))
        with torch.inference_mode():
            res = segment_scene(rgb, mode, **kw)
        dev = host.intermediate_device()
        out_masks = torch.from_numpy(res.masks.astype(np.float32)).to(dev)
        preview = torch.from_numpy(res.preview.astype(np.float32) / 255.0)[None].to(dev)
        return (out_masks, preview, ", ".join(str(l) for l in res.labels))
