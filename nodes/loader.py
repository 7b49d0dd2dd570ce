"""LoadMIDIModel: a model folder from ComfyUI/models/midi -> MIDI_MODEL."""
from __future__ import annotations

import os

import torch

from . import host
from ..midi_model import errors, hub, lora as lora_lib
from ..midi_model.dtypes import DTYPE_CHOICES, resolve_dtype
from ..midi_model.pipeline import STAGES as LIB_STAGES, MIDIPipeline

DTYPES = list(DTYPE_CHOICES)
ATTENTION = ["sdpa", "math"]
NO_LORA = "none"

host.register_model_folder()


class MIDIModel:
    """What flows on a MIDI_MODEL link: the pipeline plus its modules under model management.

    Stages put their modules on the compute device just before they run
    (encoders -> DiT -> VAE); ComfyUI offloads the others when memory is short.
    """

    STAGES = LIB_STAGES

    def __init__(self, pipe, name: str, folder: str, dtype: torch.dtype, lora: str | None = None):
        self.pipe, self.name, self.folder, self.dtype, self.lora = pipe, name, folder, dtype, lora
        self.managed = {attr: host.ManagedModule(getattr(pipe, attr), attr)
                        for attrs in self.STAGES.values() for attr in attrs}

    def prepare(self, stage: str):
        host.load_models([self.managed[a] for a in self.STAGES[stage]])
        return self.pipe

    def __repr__(self):
        return f"MIDIModel({self.name!r}, dtype={self.dtype}, lora={self.lora!r})"


def model_choices() -> list[str]:
    """Only folders that exist: a missing model is then caught when the prompt is validated."""
    return host.list_subfolders()


def missing_model_message(model: str) -> str:
    target = host.default_download_dir(model)
    return (f"MIDI model folder '{model}' not found in ComfyUI/models/{host.MODEL_FOLDER} "
            f"({', '.join(host.model_folder_paths())}): download it with "
            f"`{hub.hf_download_command(target, host.DEFAULT_REPO)}`, or set download to true")


def _download(entry: str) -> str:
    target = host.default_download_dir(entry)
    hub.download_model(target, repo_id=host.DEFAULT_REPO)  # one clear error when offline
    return target


class LoadMIDIModel:
    DESCRIPTION = ("Loads a MIDI-3D model folder (VAST-AI/MIDI-3D layout) from ComfyUI/models/midi. "
                   "Its parts are managed like core models: each stage moves to the GPU when it runs and is "
                   "offloaded when memory is needed.")
    CATEGORY = "MIDI"
    FUNCTION = "load"
    RETURN_TYPES = ("MIDI_MODEL",)
    RETURN_NAMES = ("midi_model",)
    OUTPUT_TOOLTIPS = ("The loaded MIDI pipeline (image encoders, multi-instance DiT, shape VAE).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (model_choices(), {"default": host.DEFAULT_MODEL, "tooltip":
                          "Folder under ComfyUI/models/midi holding the VAST-AI/MIDI-3D files "
                          "(model_index.json, transformer/, vae/, image_encoder_1/2/, feature_extractor_1/2/, scheduler/)."}),
                "dtype": (DTYPES, {"default": "auto", "tooltip":
                          "Weight precision. auto: bf16/fp16 where ComfyUI would use them on this GPU, fp32 on CPU. "
                          "fp32 reproduces the official numbers exactly; bf16/fp16 halve the memory."}),
                "attention": (ATTENTION, {"default": "sdpa", "tooltip":
                              "Attention kernel. sdpa: PyTorch scaled_dot_product_attention (fused, fast). "
                              "math: plain matmul + softmax (reference, slow, for debugging)."}),
            },
            "optional": {
                "lora": ([NO_LORA] + [f for f in host.list_files("loras") if f.endswith(".safetensors")],
                         {"default": NO_LORA, "tooltip":
                          "Optional LoRA for the DiT from ComfyUI/models/loras (peft or diffusers key names, "
                          ".safetensors). It is merged into the weights with peft."}),
                "lora_strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05, "tooltip":
                                  "Scale of the LoRA update (1.0 = as trained, 0 = no effect)."}),
                "download": ("BOOLEAN", {"default": False, "tooltip":
                             f"If the folder is missing, download {host.DEFAULT_REPO} (several GB) from Hugging Face "
                             "into ComfyUI/models/midi/<model> first."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model, download=False):
        # replaces ComfyUI's combo check for `model`, so a missing folder fails here, before any node
        # runs, with the command that fetches it (or passes when the node may download it)
        if host.find_subfolder(model) is None and not download:
            return missing_model_message(model)
        return True

    def load(self, model, dtype="auto", attention="sdpa", lora=NO_LORA, lora_strength=1.0, download=False):
        folder = host.find_subfolder(model)
        if folder is None:
            if not download:
                raise errors.MIDILoadError(missing_model_message(model))
            folder = _download(model)
        torch_dtype = resolve_dtype(dtype, host.torch_device(), auto=host.auto_dtype)
        load_device = host.offload_device()
        pipe = MIDIPipeline.from_pretrained(
            folder, device=load_device, dtype=torch_dtype, attention_backend=attention)
        lora_name = None
        if lora and lora != NO_LORA:
            path = host.file_path("loras", lora)
            if path is None:
                raise errors.MIDILoadError(f"LoRA '{lora}' not found in ComfyUI/models/loras: pick another or 'none'")
            lora_lib.apply_lora(pipe.transformer, path, strength=float(lora_strength))
            lora_name = f"{lora}@{lora_strength:g}"
        return (MIDIModel(pipe, model, os.path.abspath(folder), torch_dtype, lora_name),)
