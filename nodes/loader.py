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

    def __init__(self, pipe, name: str, folder: str, dtype: torch.dtype, lora: str | None = None, managed=None):
        self.pipe, self.name, self.folder, self.dtype, self.lora = pipe, name, folder, dtype, lora
        self.managed = managed or {attr: host.ManagedModule(getattr(pipe, attr), attr)
                                   for attrs in self.STAGES.values() for attr in attrs}

    def with_lora(self, updates: dict, strength: float, label: str) -> "MIDIModel":
        """Same pipeline and weights; the DiT's manager is a clone that patches the LoRA in when the
        sampler loads it (core's LoraLoader pattern)."""
        managed = dict(self.managed, transformer=self.managed["transformer"].with_lora(updates, strength))
        return MIDIModel(self.pipe, self.name, self.folder, self.dtype, label, managed)

    def prepare(self, stage: str, memory_required: int = 0):
        """Load this stage's modules (LoRA patches applied); ``memory_required``: the stage's working
        memory (midi_model.memory), so ComfyUI offloads other models to make room for it too."""
        host.load_models([self.managed[a] for a in self.STAGES[stage]], memory_required)
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
                   "offloaded when memory is needed. A LoRA is a patch applied when the DiT loads, so changing "
                   "lora or lora_strength does not read the model again.")
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
                          ".safetensors). Patched into the weights when the DiT loads (the loaded model is reused)."}),
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

    def __init__(self):
        # ComfyUI keeps one instance per graph node (as core's LoraLoader keeps its file): the model
        # last loaded here and the LoRA last read, so a LoRA / strength change reuses both.
        self._base = None  # ((folder, dtype, attention), MIDIModel without LoRA)
        self._lora = None  # (path, mtime, {layer: LoraUpdate})

    def load(self, model, dtype="auto", attention="sdpa", lora=NO_LORA, lora_strength=1.0, download=False):
        folder = host.find_subfolder(model)
        if folder is None:
            if not download:
                raise errors.MIDILoadError(missing_model_message(model))
            folder = _download(model)
        torch_dtype = resolve_dtype(dtype, host.torch_device(), auto=host.auto_dtype)
        path = None
        if lora and lora != NO_LORA:
            path = host.file_path("loras", lora)
            if path is None:
                raise errors.MIDILoadError(f"LoRA '{lora}' not found in ComfyUI/models/loras: pick another or 'none'")
        key = (os.path.abspath(folder), torch_dtype, attention)
        if self._base is None or self._base[0] != key:
            self._base = None  # drop the previous model before reading the next
            host.log.info("MIDI: reading model %s (%s, %s attention)", key[0], torch_dtype, attention)
            pipe = MIDIPipeline.from_pretrained(
                folder, device=host.offload_device(), dtype=torch_dtype, attention_backend=attention)
            self._base = (key, MIDIModel(pipe, model, key[0], torch_dtype))
        base = self._base[1]
        if path is None:
            return (base,)
        mtime = os.path.getmtime(path)
        if self._lora is None or self._lora[:2] != (path, mtime):
            host.log.info("MIDI: reading LoRA %s", path)
            self._lora = (path, mtime, lora_lib.load_lora(base.pipe.transformer, path))
        return (base.with_lora(self._lora[2], float(lora_strength), f"{lora}@{lora_strength:g}"),)
