"""Test fixtures that write models: random-weight MIDI checkpoints in the released layout, and
tiny random SAM / Grounding DINO for the segmentation tests (this pack's and the nodes').

Nothing at run time imports this module; the tests and ``bench/`` do. Everything is saved in
the real formats, so it loads through the same loaders as the released models.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .presets import PRESETS
from .segmentation.sam_loader import SamConfig, build_sam

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



def _is_norm(module: nn.Module) -> bool:
    # LayerNorm / FP32LayerNorm / RMSNorm / GroupNorm, whoever defines them
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith("Norm")


@torch.no_grad()
def randomize(module: nn.Module, weight_scale: float = 1.0, matrices: bool = True) -> nn.Module:
    """Seeded random weights far from the trivial ones, so that tests can see every part work.

    Matrices ~ N(0, weight_scale^2 / fan_in) (unit-variance activations); norm scales
    ~ N(1, 0.25^2) (a scale near 0 would silence the layer after it: with RMS-normed q/k
    it makes attention uniform, and grouped multi-instance attention looks like none);
    biases and norm shifts ~ N(0, 0.1^2)."""
    for mod in module.modules():
        norm = _is_norm(mod)
        for pname, p in mod.named_parameters(recurse=False):
            if p.dim() > 1:
                if matrices:
                    p.normal_(0.0, weight_scale / p[0].numel() ** 0.5)
            elif norm and pname == "weight":
                p.normal_(1.0, 0.25)
            else:
                p.normal_(0.0, 0.1)
    return module

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
    """A complete model folder in the released layout with seeded random weights (see ``randomize``)."""
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
        randomize(module, weight_scale)
        (root / name / "config.json").write_text(json.dumps({"_class_name": cls_name, **cfg}, indent=2))
        _save_sharded({k: v.to(dtype) for k, v in module.state_dict().items()}, root / name,
                      "diffusion_pytorch_model", shards)
    for sub, kind in (("image_encoder_1", "clip"), ("image_encoder_2", "dino")):
        model = build_image_encoder(kind, dict(spec[kind]), device="cpu")
        randomize(model, matrices=False)  # keep transformers' matrix init, move norms and biases off 1 / 0
        model = model.to(dtype)
        model.save_pretrained(str(root / sub), safe_serialization=True)
    return root


# ------------------------------------------------------------------------------------------------
# tiny segmentation models
# img_size stays 1024 (SAM's preprocessing resizes to it); windowed attention only, because one
# global block over 64x64 tokens costs ~15x the rest on a CPU. Loader tests add a global block.
TINY_SAM_CONFIG = SamConfig(
    model_type="tiny", img_size=1024, patch_size=16, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_mlp_ratio=2.0, encoder_window_size=4, encoder_global_attn_indexes=(), prompt_embed_dim=32,
    mask_in_chans=8, decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=8, iou_head_depth=2,
    iou_head_hidden_dim=16,
)

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "the", "sofa", "table", "lamp",
              "dog", "cat", "chair", "bed", "plant"]


def make_tiny_sam(seed: int = 0, config: SamConfig | None = None):
    torch.manual_seed(seed)
    return build_sam(config or TINY_SAM_CONFIG)


def save_tiny_sam(path, seed: int = 0, safetensors: bool = False, config: SamConfig | None = None):
    """Write a tiny random SAM as a plain state dict (``.pth``) or ``.safetensors``; returns the module."""
    sam = make_tiny_sam(seed, config)
    sd = {k: v.contiguous() for k, v in sam.state_dict().items()}
    path = Path(path)
    if safetensors:
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return sam


def save_tiny_grounding_dino(folder, seed: int = 0, num_queries: int = 3):
    """Write a tiny random Grounding DINO (swin + BERT, HF layout with processor) to ``folder``."""
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(TINY_VOCAB)})
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      window_size=2, out_features=["stage2", "stage3", "stage4"])
    bert = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # d_model must be a multiple of 32 (GroupNorm(32) in the input projections); 2 decoder
    # layers because the box heads of layers 1.. are tied to layer 0
    cfg = GroundingDinoConfig(backbone_config=swin, text_config=bert, d_model=32, encoder_layers=1, decoder_layers=2,
                              encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                              decoder_attention_heads=2, num_queries=num_queries, max_text_len=32,
                              encoder_n_points=1, decoder_n_points=1)
    model = GroundingDinoForObjectDetection(cfg).eval()
    model.save_pretrained(str(folder))
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    return model


# ------------------------------------------------------------------------------------------------
# analytic fields behind the VAE's interface
class FieldVAE(nn.Module):
    """Stands in for ``vae.TripoSGVAE`` in the decoders: instance ``i`` of the latents
    (``latents[i, 0, 0] == i``, see :meth:`latents`) is the field ``fields[i](points (P,3)) -> (P,)``.

    It has the VAE's decode interface (``latent_context``, ``query``, ``decode`` with
    ``callback(done, total)``), so the dense / progressive decode and their coarse-to-fine
    twins run on fields built to exercise a branch."""

    def __init__(self, fields):
        super().__init__()
        self.fields = list(fields)
        self.anchor = nn.Parameter(torch.zeros(1))  # device and dtype, as the decoders read them
        self.queried = 0  # rows the decoders asked for, and in how many calls
        self.calls = 0

    def latents(self) -> torch.Tensor:
        lat = torch.zeros(len(self.fields), 1, 1)
        lat[:, 0, 0] = torch.arange(len(self.fields), dtype=torch.float32)
        return lat

    def latent_context(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def query_keys(self, context: torch.Tensor):
        return None  # no attention: nothing to keep between blocks

    def query(self, context: torch.Tensor, points: torch.Tensor, keys=None) -> torch.Tensor:
        self.queried += points.shape[0] * points.shape[1]
        self.calls += 1
        out = [self.fields[int(c[0, 0])](p.float()) for c, p in zip(context, points)]
        return torch.stack(out)[..., None].to(points.dtype)

    def decode(self, latents: torch.Tensor, points: torch.Tensor, chunk: int = 50_000,
               callback=None) -> torch.Tensor:
        context = self.latent_context(latents)
        outs, total = [], points.shape[1]
        for start in range(0, total, chunk):
            outs.append(self.query(context, points[:, start:start + chunk]))
            if callback is not None:
                callback(min(start + chunk, total), total)
        return torch.cat(outs, dim=1)
