"""Model sizes (tiny / medium / full) and random-weight checkpoints in the released layout.

Used by tests (checkpoints they write themselves), by the benchmarks, and to check on
the meta device that the full-size tree has the released keys and shapes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CLIP_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}
DINO_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "image_processor_type": "BitImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 256},
}
SCHEDULER = {"_class_name": "RectifiedFlowScheduler", "num_train_timesteps": 1000, "shift": 1.0,
             "use_dynamic_shifting": False}

PRESETS = {
    # the released sizes (class defaults + ViT-L/14 CLIP + DINOv2-L with 7 channels)
    "full": {
        "transformer": {"num_attention_heads": 16, "width": 2048, "in_channels": 64, "num_layers": 21,
                        "cross_attention_dim": 768, "cross_attention_2_dim": 1024},
        "vae": {"in_channels": 3, "latent_channels": 64, "num_attention_heads": 8, "width_encoder": 512,
                "width_decoder": 1024, "num_layers_encoder": 8, "num_layers_decoder": 16,
                "embedding_type": "frequency", "embed_frequency": 8, "embed_include_pi": False},
        "clip": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "projection_dim": 768,
                 "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "dino": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4,
                 "patch_size": 14, "image_size": 518, "num_channels": 7, "layerscale_value": 1.0,
                 "layer_norm_eps": 1e-6, "hidden_act": "gelu", "qkv_bias": True},
    },
    # a few hundred MB of compute: realistic shapes for CPU benchmarks
    "medium": {
        "transformer": {"num_attention_heads": 8, "width": 512, "in_channels": 64, "num_layers": 21,
                        "cross_attention_dim": 256, "cross_attention_2_dim": 384},
        "vae": {"in_channels": 3, "latent_channels": 64, "num_attention_heads": 4, "width_encoder": 64,
                "width_decoder": 256, "num_layers_encoder": 1, "num_layers_decoder": 4,
                "embedding_type": "frequency", "embed_frequency": 8, "embed_include_pi": False},
        "clip": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "patch_size": 14, "image_size": 224, "projection_dim": 256, "hidden_act": "quick_gelu"},
        "dino": {"hidden_size": 384, "num_hidden_layers": 2, "num_attention_heads": 6, "mlp_ratio": 4,
                 "patch_size": 14, "image_size": 518, "num_channels": 7, "layerscale_value": 1.0,
                 "layer_norm_eps": 1e-6},
    },
    # the golden checkpoint's sizes
    "tiny": {
        "transformer": {"num_attention_heads": 4, "width": 96, "in_channels": 16, "num_layers": 21,
                        "cross_attention_dim": 40, "cross_attention_2_dim": 48},
        "vae": {"in_channels": 3, "latent_channels": 16, "num_attention_heads": 4, "width_encoder": 32,
                "width_decoder": 64, "num_layers_encoder": 1, "num_layers_decoder": 2,
                "embedding_type": "frequency", "embed_frequency": 8, "embed_include_pi": False},
        "clip": {"hidden_size": 32, "intermediate_size": 56, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "patch_size": 14, "image_size": 224, "projection_dim": 40, "hidden_act": "quick_gelu"},
        "dino": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 4,
                 "patch_size": 14, "image_size": 518, "num_channels": 7, "layerscale_value": 1.0,
                 "layer_norm_eps": 1e-6},
    },
}


def _save_sharded(sd: dict, folder: Path, stem: str, shards: int) -> None:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in sd.items()}
    if shards <= 1:
        save_file(sd, str(folder / f"{stem}.safetensors"), metadata={"format": "pt"})
        return
    keys = sorted(sd)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_random_checkpoint(folder, preset: str = "tiny", seed: int = 0, dtype=torch.float32,
                            shards: int = 1, weight_scale: float = 1.0) -> Path:
    """A complete model folder in the released layout with seeded random weights."""
    from .checkpoint import build_dit, build_image_encoder, build_vae

    spec = PRESETS[preset]
    root = Path(folder)
    for sub in ("transformer", "vae", "scheduler", "image_encoder_1", "image_encoder_2",
                "feature_extractor_1", "feature_extractor_2"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "MIDIPipeline",
        "transformer": ["midi.models.transformers.triposg_transformer", "TripoSGDiTModel"],
        "vae": ["midi.models.autoencoders.autoencoder_kl_triposg", "TripoSGVAEModel"],
        "scheduler": ["midi.schedulers.scheduling_rectified_flow", "RectifiedFlowScheduler"],
        "image_encoder_1": ["transformers", "CLIPVisionModelWithProjection"],
        "image_encoder_2": ["transformers", "Dinov2Model"],
        "feature_extractor_1": ["transformers", "CLIPImageProcessor"],
        "feature_extractor_2": ["transformers", "BitImageProcessor"],
    }, indent=2))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    (root / "feature_extractor_1" / "preprocessor_config.json").write_text(json.dumps(CLIP_PROCESSOR, indent=2))
    (root / "feature_extractor_2" / "preprocessor_config.json").write_text(json.dumps(DINO_PROCESSOR, indent=2))

    torch.manual_seed(seed)
    for name, cls_name, build in (("transformer", "TripoSGDiTModel", build_dit), ("vae", "TripoSGVAEModel", build_vae)):
        cfg = dict(spec[name])
        module = build(cfg, device="cpu")
        with torch.no_grad():
            for p in module.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, weight_scale / p.shape[1] ** 0.5)
                else:
                    p.normal_(1.0 if "norm" in name else 0.0, 0.02)
        (root / name / "config.json").write_text(json.dumps({"_class_name": cls_name, **cfg}, indent=2))
        _save_sharded({k: v.to(dtype) for k, v in module.state_dict().items()}, root / name,
                      "diffusion_pytorch_model", shards)
    for sub, kind in (("image_encoder_1", "clip"), ("image_encoder_2", "dino")):
        model = build_image_encoder(kind, dict(spec[kind]), device="cpu").to(dtype)
        model.save_pretrained(str(root / sub), safe_serialization=True)
    return root
