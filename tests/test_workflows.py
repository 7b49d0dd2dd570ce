"""The shipped workflows: parse, convert UI -> API with our nodes' INPUT_TYPES (plus small doubles of
the core nodes), and run node by node on the golden checkpoint. Core nodes (LoadImage, Preview3D,
PreviewImage, the SDXL chain) are test doubles here; the real host runs are in docs/nodes.md."""
from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pytest
import torch
import trimesh

from conftest import ROOT, SHARED, _require
from nodes_fixtures import *  # noqa: F401,F403  (fixtures)

from comfyui_midi import nodes
from comfyui_midi.midi_model.meshing import DEFAULT_DECODER
from comfyui_midi.nodes import host

sys.path.insert(0, str(_require(SHARED / "tools" / "comfy_host")))
from comfy_workflow import ui_to_api  # noqa: E402  (stdlib converter, no server needed)

# file names are the template browser's card titles (frontend 1.45 shows custom-node templates by name)
IMAGE_WF, SEG_WF, SDXL_WF = ("3D scene from an image and a text prompt.json", "3D scene from a seg map.json",
                             "3D scene from an SDXL prompt.json")
REROLL_WF = "Reroll objects in a 3D scene.json"
TEXTURED_WF = "Textured 3D scene from a seg map.json"   # run in tests/test_texture_workflow.py
WORKFLOWS = [IMAGE_WF, SEG_WF, SDXL_WF]
P3D = "STRING,FILE_3D_GLB,FILE_3D_GLTF,FILE_3D_FBX,FILE_3D_OBJ,FILE_3D_STL,FILE_3D_USDZ,FILE_3D"


# ------------------------------------------------------------------------------------------------
# core node doubles (what /object_info says about them, and what they do in a test)
class LoadImage:
    IMAGES: dict = {}
    FUNCTION, RETURN_TYPES = "load", ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (sorted(cls.IMAGES) or ["x.png"], {"image_upload": True})}}

    def load(self, image):
        return (self.IMAGES[image], torch.zeros(1, 64, 64))


class PreviewImage:
    FUNCTION, RETURN_TYPES, OUTPUT_NODE = "show", (), True
    SHOWN: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def show(self, images):
        assert images.ndim == 4 and images.shape[-1] == 3
        self.SHOWN.append(images.shape)
        return {"ui": {"images": []}}


class Preview3D:
    FUNCTION, RETURN_TYPES, OUTPUT_NODE = "show", (), True
    SHOWN: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_file": (P3D, {"default": "", "widgetType": "STRING", "multiline": False})},
                "optional": {"camera_info": ("LOAD3D_CAMERA",), "bg_image": ("IMAGE",)}}

    def show(self, model_file, camera_info=None, bg_image=None, image=None):  # image: the frontend's UI-only value
        self.SHOWN.append(model_file)
        return {"ui": {"result": [model_file, camera_info, None]}}


class CheckpointLoaderSimple:
    FUNCTION, RETURN_TYPES = "load", ("MODEL", "CLIP", "VAE")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (["sd_xl_base_1.0.safetensors"],)}}

    def load(self, ckpt_name):
        return ("model", "clip", "vae")


class CLIPTextEncode:
    FUNCTION, RETURN_TYPES = "encode", ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}}

    def encode(self, text, clip):
        assert clip == "clip" and text
        return ([text],)


class EmptyLatentImage:
    FUNCTION, RETURN_TYPES = "make", ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 1024, "min": 16, "max": 16384}),
                             "height": ("INT", {"default": 1024, "min": 16, "max": 16384}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def make(self, width, height, batch_size):
        return ({"samples": torch.zeros(batch_size, 4, height // 8, width // 8)},)


class KSampler:
    FUNCTION, RETURN_TYPES = "sample", ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}), "cfg": ("FLOAT", {"default": 8.0}),
            "sampler_name": (["euler", "dpmpp_2m"],), "scheduler": (["normal", "karras"],),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0})}}

    def sample(self, **kw):
        assert kw["model"] == "model" and kw["sampler_name"] == "euler"
        return (kw["latent_image"],)


class VAEDecode:
    FUNCTION, RETURN_TYPES = "decode", ("IMAGE",)
    IMAGE = None

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    def decode(self, samples, vae):
        assert vae == "vae"
        return (self.IMAGE,)   # the "generated" picture: the golden scene


CORE = {c.__name__: c for c in (LoadImage, PreviewImage, Preview3D, CheckpointLoaderSimple, CLIPTextEncode,
                                EmptyLatentImage, KSampler, VAEDecode)}


def object_info() -> dict:
    info = {}
    for name, cls in {**CORE, **nodes.NODE_CLASS_MAPPINGS}.items():
        it = cls.INPUT_TYPES()
        info[name] = {"input": it, "input_order": {k: list(v) for k, v in it.items()},
                      "output": list(cls.RETURN_TYPES), "name": name}
    return info


def run_api(api: dict) -> dict:
    """Execute an API prompt node by node (dependencies first); returns {node id: outputs}."""
    classes = {**CORE, **nodes.NODE_CLASS_MAPPINGS}
    results, ui = {}, {}

    def run(nid):
        if nid in results:
            return results[nid]
        node = api[nid]
        kwargs = {}
        for k, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                kwargs[k] = run(v[0])[v[1]]
            else:
                kwargs[k] = v
        cls = classes[node["class_type"]]
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(out, dict):
            ui[nid] = out.get("ui")
            out = out.get("result", ())
        assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES), node["class_type"]
        results[nid] = out
        return out

    for nid in api:
        run(nid)
    return ui


def convert(name, comfy_dirs):
    wf = json.loads((ROOT / "workflows" / name).read_text())
    api, warnings = ui_to_api(wf, object_info())
    assert not warnings, warnings
    return wf, api


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_converts_with_our_input_types(name, comfy_dirs, scene_image):
    LoadImage.IMAGES = {"midi_example.png": scene_image, "midi_example_seg.png": scene_image}
    wf, api = convert(name, comfy_dirs)
    types = [n["class_type"] for n in api.values()]
    for key in ("SegmentScene", "LoadMIDIModel", "EncodeMultiInstanceCondition", "MIDISampler", "DecodeToMeshes",
                "SaveMIDIScene", "Preview3D"):
        assert types.count(key) == 1, (name, key)
    notes = [n for n in wf["nodes"] if n["type"] == "Note"]
    assert notes and "models/midi/MIDI-3D" in notes[0]["widgets_values"][0]
    by = {n["class_type"]: n["inputs"] for n in api.values()}
    assert by["MIDISampler"]["seed"] == 42 and by["MIDISampler"]["steps"] == 50 and by["MIDISampler"]["guidance"] == 7.0
    assert by["LoadMIDIModel"]["model"] == "MIDI-3D" and by["DecodeToMeshes"]["octree_depth"] == 8
    assert by["DecodeToMeshes"]["decoder"] == DEFAULT_DECODER       # the one default, as the node offers it
    assert isinstance(by["Preview3D"]["model_file"], list)          # linked to Save MIDI Scene's model_file
    assert isinstance(by["SaveMIDIScene"]["names"], list)           # linked to Segment Scene's labels
    mode = by["SegmentScene"]["mode"]
    assert mode == ("label_map" if name == SEG_WF else "text")
    if name == SDXL_WF:
        assert {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode"} <= set(types)
        assert types.count("CLIPTextEncode") == 2
    # every widget value of our nodes passes validation as the host does it: VALIDATE_INPUTS for the inputs
    # it names (instead of the combo check), the combo list / range for the others
    for n in api.values():
        cls = nodes.NODE_CLASS_MAPPINGS.get(n["class_type"])
        if cls is None:
            continue
        it = cls.INPUT_TYPES()
        specs = {**it.get("required", {}), **it.get("optional", {})}
        custom = inspect.getfullargspec(cls.VALIDATE_INPUTS).args[1:] if hasattr(cls, "VALIDATE_INPUTS") else []
        for k, v in n["inputs"].items():
            if isinstance(v, list) or k in custom:
                continue
            typ = specs[k][0]
            if isinstance(typ, list):
                assert v in typ, (n["class_type"], k, v)
            elif typ in ("INT", "FLOAT"):
                assert specs[k][1]["min"] <= v <= specs[k][1]["max"], (n["class_type"], k, v)
        if custom:
            verdict = cls.VALIDATE_INPUTS(**{k: n["inputs"][k] for k in custom if k in n["inputs"]})
            if n["class_type"] == "SegmentScene" and mode == "text":  # no SAM here: found before anything runs
                assert verdict.startswith("Segment Scene: mode text needs SAM checkpoint 'sam_vit_b_01ec64.pth' "
                                          "(not found)"), verdict
            else:
                assert verdict is True, (n["class_type"], verdict)


def test_seg_map_workflow_runs_on_golden_checkpoint(comfy_dirs):
    """As shipped, except the tiny model's CPU speed: 4 steps and octree depth 5 instead of 50 / 8."""
    Preview3D.SHOWN.clear()
    _, api = convert(SEG_WF, comfy_dirs)   # the pack's example scene (bedroom): nothing from ComfyUI/input
    for n in api.values():
        if n["class_type"] == "MIDISampler":
            n["inputs"]["steps"] = 4
        if n["class_type"] == "DecodeToMeshes":
            n["inputs"]["octree_depth"] = 5
    host.set_progress_hook(None)
    ui = run_api(api)
    assert len(Preview3D.SHOWN) == 1
    path = comfy_dirs / "output" / Preview3D.SHOWN[0]
    assert path.is_file() and Preview3D.SHOWN[0].startswith("midi/scene_")
    saved = [u for u in ui.values() if u and "3d" in u][0]["3d"]
    assert saved[0]["subfolder"] == "midi" and saved[0]["type"] == "output"
    scene = trimesh.load(path)
    assert sorted(scene.graph.nodes_geometry) == ["seg_150", "seg_29", "seg_76"]
    assert all(len(g.faces) > 100 for g in scene.geometry.values())


@pytest.mark.parametrize("name", [IMAGE_WF, SDXL_WF])
def test_text_workflows_run_with_tiny_segmenters(name, comfy_dirs, scene_image, tiny_segmenters):
    """Text mode with a tiny random SAM + Grounding DINO (thresholds 0 so they detect something)."""
    # a 192x256 crop: the tiny Grounding DINO's last feature map is 1x1 (GroupNorm fails) for square inputs
    image = scene_image[:, :192].contiguous()
    LoadImage.IMAGES = {"midi_example.png": image}
    VAEDecode.IMAGE = image
    Preview3D.SHOWN.clear()
    _, api = convert(name, comfy_dirs)
    for n in api.values():
        i = n["inputs"]
        if n["class_type"] == "MIDISampler":
            i["steps"] = 2
        if n["class_type"] == "DecodeToMeshes":
            i["octree_depth"] = 4
        if n["class_type"] == "LoadMIDIExample":   # the tiny Grounding DINO needs the non-square picture
            n.update(class_type="LoadImage", inputs={"image": "midi_example.png"})
        if n["class_type"] == "SegmentScene":
            i.update(sam_model=tiny_segmenters["sam"], grounding_dino=tiny_segmenters["dino"],
                     box_threshold=0.0, text_threshold=0.0, max_instances=2, too_many="keep_first", min_area=0.0)
    run_api(api)
    assert len(Preview3D.SHOWN) == 1
    scene = trimesh.load(comfy_dirs / "output" / Preview3D.SHOWN[0])
    assert 1 <= len(scene.graph.nodes_geometry) <= 2


# ------------------------------------------------------------------------------------------------
# what the template browser and the frontend's missing-model check read
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")  # frontend 1.45's list
MODEL_DIRS = {("SegmentScene", "sam_model"): "sams", ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints"}


def all_templates():
    return sorted(p.name for p in (ROOT / "workflows").glob("*.json"))


def test_every_template_is_tested_and_has_a_thumbnail():
    assert all_templates() == sorted(WORKFLOWS + [REROLL_WF, TEXTURED_WF])
    for p in (ROOT / "workflows").iterdir():
        # ComfyUI lists every *.json here as a template and serves <name>.jpg as its card's picture
        assert p.suffix in (".json", ".jpg"), p.name
    for name in all_templates():
        thumb = ROOT / "workflows" / (name[:-len(".json")] + ".jpg")
        assert thumb.is_file(), thumb.name
        assert thumb.read_bytes()[:3] == b"\xff\xd8\xff" and thumb.stat().st_size < 150_000, thumb.name


@pytest.mark.parametrize("name", all_templates())
def test_template_needs_nothing_in_the_input_folder(name):
    wf = json.loads((ROOT / "workflows" / name).read_text())
    types = [n["type"] for n in wf["nodes"]]
    assert "LoadImage" not in types, "the pack's example scenes come through Load MIDI Example"
    for n in wf["nodes"]:
        if n["type"] == "LoadMIDIExample":
            assert n["widgets_values"][0] in nodes.NODE_CLASS_MAPPINGS["LoadMIDIExample"].INPUT_TYPES()[
                "required"]["example"][0]


@pytest.mark.parametrize("name", all_templates())
def test_single_file_models_carry_download_metadata(name, comfy_dirs):
    """Every combo value that is a model file (what the frontend checks) names its url and folder."""
    wf, api = convert(name, comfy_dirs)
    ui_by_id = {str(n["id"]): n for n in wf["nodes"]}
    found = 0
    for nid, n in api.items():
        for k, v in n["inputs"].items():
            if isinstance(v, str) and v.lower().endswith(MODEL_EXTS):
                meta = {m["name"]: m for m in ui_by_id[nid]["properties"].get("models", [])}
                assert v in meta, (name, n["class_type"], k)
                assert meta[v]["directory"] == MODEL_DIRS[(n["class_type"], k)]
                assert meta[v]["url"].startswith("https://") and meta[v]["url"].endswith("/" + v)
                found += 1
    assert found == {IMAGE_WF: 1, SDXL_WF: 2}.get(name, 0)
