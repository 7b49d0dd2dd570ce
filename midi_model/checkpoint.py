"""Load a model folder in the released ``VAST-AI/MIDI-3D`` layout, strictly.

Only the sub-folders, their JSON configs and the weights are read; the library
strings in ``model_index.json`` are ignored. Weights come from safetensors (single
file or sharded with an index) or, failing that, ``torch.load(weights_only=True)``.
Every tensor must be consumed and every parameter filled, with matching shapes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .dit import DiTConfig, MIDIDiT
from .errors import MIDILoadError
from .vae import TripoSGVAE, VAEConfig

REPO_ID = "VAST-AI/MIDI-3D"

# sub-folder -> (config file, weight-file stem or None)
COMPONENTS = {
    "transformer": ("config.json", "diffusion_pytorch_model"),
    "vae": ("config.json", "diffusion_pytorch_model"),
    "scheduler": ("scheduler_config.json", None),
    "image_encoder_1": ("config.json", "model"),
    "image_encoder_2": ("config.json", "model"),
    "feature_extractor_1": ("preprocessor_config.json", None),
    "feature_extractor_2": ("preprocessor_config.json", None),
}
# legacy transformers weight names, read only with weights_only=True
_BIN_NAMES = {"diffusion_pytorch_model": "diffusion_pytorch_model.bin", "model": "pytorch_model.bin"}
DINO_CHANNELS = 7


def check_model_folder(folder) -> Path:
    """Fail early, naming the first thing missing, and recognise a TripoSG folder."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        from .hub import hf_download_command  # (hub imports this module)
        raise MIDILoadError(f"model folder {str(root)!r} does not exist: download {REPO_ID} into it "
                            f"({hf_download_command(root)})")
    index = root / "model_index.json"
    if index.is_file():
        try:
            cls = json.loads(index.read_text()).get("_class_name", "")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MIDILoadError(f"{index} is not valid JSON ({e}): download the model again") from None
        if "TripoSG" in cls or (root / "image_encoder_dinov2").is_dir():
            raise MIDILoadError(f"{root} is a TripoSG model ({cls or 'image_encoder_dinov2/'}), not MIDI: "
                                f"MIDI needs {REPO_ID}, whose DiT has two cross-attentions")
    for sub, (cfg_name, stem) in COMPONENTS.items():
        d = root / sub
        if not d.is_dir():
            raise MIDILoadError(f"model folder {root} has no {sub}/ sub-folder: it is not a complete "
                                f"{REPO_ID} download (re-download, or pick the MIDI-3D folder itself)")
        if not (d / cfg_name).is_file():
            raise MIDILoadError(f"{d / cfg_name} is missing: re-download {REPO_ID}")
        if stem is not None:
            weight_files(d, stem)  # raises when absent
    return root


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MIDILoadError(f"{path} is missing: re-download {REPO_ID}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MIDILoadError(f"{path} is not valid JSON ({e}): re-download it") from None


def weight_files(subdir: Path, stem: str) -> list[Path]:
    """The weight files of one component: single safetensors, sharded safetensors, or .bin."""
    single = subdir / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    index = subdir / f"{stem}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        if not shards:
            raise MIDILoadError(f"{index} lists no shards: re-download {REPO_ID}")
        missing = [s for s in shards if not (subdir / s).is_file()]
        if missing:
            raise MIDILoadError(f"{subdir / missing[0]} is missing ({len(missing)} of {len(shards)} shards "
                                f"listed in {index.name}): the download is partial, re-download it")
        return [subdir / s for s in shards]
    legacy = subdir / _BIN_NAMES[stem]
    if legacy.is_file():
        return [legacy]
    raise MIDILoadError(f"{subdir} has no weights ({stem}.safetensors, a sharded index or "
                        f"{_BIN_NAMES[stem]}): re-download {REPO_ID}")


def read_header(files: list[Path]) -> dict[str, tuple]:
    """key -> shape for every tensor in the files, without reading the data."""
    from safetensors import safe_open

    shapes = {}
    for f in files:
        if f.suffix != ".safetensors":
            shapes.update({k: tuple(v.shape) for k, v in _torch_load(f).items()})
            continue
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    shapes[k] = tuple(sf.get_slice(k).get_shape())
        except Exception as e:  # safetensors raises its own error types
            raise MIDILoadError(f"{f} is not a readable safetensors file ({e}): it is corrupt or "
                                f"truncated, re-download it") from None
    return shapes


def read_tensors(files: list[Path], dtype: torch.dtype | None, device="cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = {}
    for f in files:
        if f.suffix == ".safetensors":
            try:
                part = load_file(str(f), device="cpu")
            except Exception as e:
                raise MIDILoadError(f"{f} is not a readable safetensors file ({e}): it is corrupt or "
                                    f"truncated, re-download it") from None
        else:
            part = _torch_load(f)
        for k, v in part.items():
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            sd[k] = v.to(device)
    return sd


def _torch_load(path: Path) -> dict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise MIDILoadError(f"{path} cannot be loaded safely ({e}): use the safetensors files") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise MIDILoadError(f"{path} does not hold a state dict")
    return obj


def check_state_dict(expected: dict[str, tuple], found: dict[str, tuple], where: str) -> None:
    """Strict key and shape comparison with one message naming the first problem."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing:
        raise MIDILoadError(f"{where}: tensor {missing[0]!r} is missing ({len(missing)} missing in all): "
                            f"the weights do not belong to this config, or the file is partial")
    if extra:
        raise MIDILoadError(f"{where}: unexpected tensor {extra[0]!r} ({len(extra)} extra in all): "
                            f"the weights belong to another model or config")
    for k, shape in expected.items():
        if tuple(found[k]) != tuple(shape):
            raise MIDILoadError(f"{where}: tensor {k!r} has shape {tuple(found[k])}, the config "
                                f"expects {tuple(shape)}: config.json and weights do not match")


def expected_shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def load_native(module_meta: nn.Module, subdir: Path, stem: str, dtype, device) -> nn.Module:
    """Fill a module built on the meta device from its weight files, strictly."""
    files = weight_files(subdir, stem)
    check_state_dict(expected_shapes(module_meta), read_header(files), str(subdir))
    sd = read_tensors(files, dtype, device)
    module_meta.load_state_dict(sd, strict=True, assign=True)
    return module_meta.eval().requires_grad_(False)


def build_dit(cfg: dict | DiTConfig, device="meta") -> MIDIDiT:
    cfg = cfg if isinstance(cfg, DiTConfig) else DiTConfig.from_dict(cfg)
    with torch.device(device):
        return MIDIDiT(cfg)


def build_vae(cfg: dict | VAEConfig, device="meta") -> TripoSGVAE:
    cfg = cfg if isinstance(cfg, VAEConfig) else VAEConfig.from_dict(cfg)
    with torch.device(device):
        return TripoSGVAE(cfg)


def load_transformer(root: Path, dtype=None, device="cpu") -> MIDIDiT:
    cfg = read_json(root / "transformer" / "config.json")
    _expect_class(cfg, root / "transformer", "TripoSGDiTModel", needs=("cross_attention_2_dim",))
    return load_native(build_dit(cfg), root / "transformer", "diffusion_pytorch_model", dtype, device)


def load_vae(root: Path, dtype=None, device="cpu") -> TripoSGVAE:
    cfg = read_json(root / "vae" / "config.json")
    _expect_class(cfg, root / "vae", "TripoSGVAEModel")
    return load_native(build_vae(cfg), root / "vae", "diffusion_pytorch_model", dtype, device)


def _expect_class(cfg: dict, where: Path, name: str, needs=()) -> None:
    cls = cfg.get("_class_name")
    if cls is not None and cls != name:
        raise MIDILoadError(f"{where}/config.json describes {cls}, expected {name}: this is not a MIDI-3D folder")
    for key in needs:
        if key not in cfg:
            raise MIDILoadError(f"{where}/config.json has no {key!r}: this is not MIDI's DiT "
                                f"(a TripoSG transformer has one cross-attention); use {REPO_ID}")


def _hf_class(kind: str):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

    return {"clip": (CLIPVisionConfig, CLIPVisionModelWithProjection),
            "dino": (Dinov2Config, Dinov2Model)}[kind]


def build_image_encoder(kind: str, config, device="meta") -> nn.Module:
    cfg_cls, model_cls = _hf_class(kind)
    if isinstance(config, dict):
        config = cfg_cls(**config)
    with torch.device(device):
        return model_cls(config)


def load_image_encoder(root: Path, kind: str, dtype=None, device="cpu") -> nn.Module:
    """CLIP (image_encoder_1) or DINOv2 (image_encoder_2) through transformers, strictly."""
    sub = root / ("image_encoder_1" if kind == "clip" else "image_encoder_2")
    cfg_cls, model_cls = _hf_class(kind)
    try:
        config = cfg_cls.from_pretrained(str(sub))
    except Exception as e:
        raise MIDILoadError(f"{sub}/config.json cannot be read as a {cfg_cls.__name__} ({e})") from None
    read_header(weight_files(sub, "model"))  # names a corrupt or truncated file before transformers does
    widen = kind == "dino" and config.num_channels < DINO_CHANNELS
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        try:
            model, info = model_cls.from_pretrained(str(sub), output_loading_info=True, **kwargs)
        except TypeError:  # transformers < 5 names it torch_dtype
            model, info = model_cls.from_pretrained(str(sub), output_loading_info=True, torch_dtype=dtype)
    except Exception as e:
        raise MIDILoadError(f"{sub}: the weights do not fit {model_cls.__name__} with this config.json "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    # transformers only warns about these; a MIDI encoder with any of them is broken
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])]
    for what, keys in (("is missing", info.get("missing_keys")), ("is unexpected", info.get("unexpected_keys")),
                       ("has the wrong shape", mismatched)):
        keys = sorted(keys or [])
        if keys:
            raise MIDILoadError(f"{sub}: tensor {keys[0]!r} {what} ({len(keys)} in all): config.json "
                                f"and weights do not match; re-download {REPO_ID}")
    if widen:
        model = _widen_dino(model)
    return model.to(device).eval().requires_grad_(False)


def _widen_dino(model: nn.Module) -> nn.Module:
    """A 3-channel DINOv2 -> 7 channels the way the official adapter initialises it:
    columns 0-2 the kernel, 3-5 a copy, 6 a copy of column 0."""
    from transformers import Dinov2Model

    old = model.config.num_channels
    sd = model.state_dict()
    key = "embeddings.patch_embeddings.projection.weight"
    w = sd[key]
    parts, left = [w[:, :3]], DINO_CHANNELS - 3
    while left > 0:
        parts.append(w[:, :min(old, left)].clone())
        left -= old
    sd[key] = torch.cat(parts, dim=1)
    config = model.config
    config.num_channels = DINO_CHANNELS
    new = Dinov2Model(config).to(w.dtype)
    new.load_state_dict(sd)
    return new


def load_processor(root: Path, index: int):
    """CLIPImageProcessor / BitImageProcessor from preprocessor_config.json, PIL backend
    (the one that reproduces the official pixels exactly)."""
    from transformers import AutoImageProcessor

    sub = root / f"feature_extractor_{index}"
    try:
        try:
            return AutoImageProcessor.from_pretrained(str(sub), backend="pil")
        except (TypeError, ValueError):
            return AutoImageProcessor.from_pretrained(str(sub), use_fast=False)
    except Exception as e:
        raise MIDILoadError(f"{sub}/preprocessor_config.json cannot be used ({e})") from None


def load_scheduler_config(root: Path) -> dict:
    cfg = read_json(root / "scheduler" / "scheduler_config.json")
    cls = cfg.get("_class_name", "RectifiedFlowScheduler")
    if cls not in ("RectifiedFlowScheduler", "FlowMatchEulerDiscreteScheduler"):
        raise MIDILoadError(f"{root}/scheduler/scheduler_config.json names {cls}: MIDI uses RectifiedFlowScheduler")
    return cfg
