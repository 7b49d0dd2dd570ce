"""Load a segment-anything (SAM v1) checkpoint of any size, safely.

The file is read only through ``safetensors`` or ``torch.load(weights_only=True)``; the
architecture (vit_b / vit_l / vit_h, or any non-standard size such as the tiny test model)
is read from the state-dict shapes, so one loader serves the released checkpoints
(``sam_vit_b_01ec64.pth`` & co, what other packs keep in ``ComfyUI/models/sams/``) and tests.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

from ..errors import MIDILoadError

# Released SAM v1 sizes: embed dim -> (name, heads). Used to name the model and as a
# fallback for heads when the checkpoint has no relative-position tables to read them from.
_KNOWN = {768: ("vit_b", 12), 1024: ("vit_l", 16), 1280: ("vit_h", 16)}
_REQUIRED = (
    "image_encoder.patch_embed.proj.weight",
    "image_encoder.pos_embed",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight",
)
_HINT = ("use an original segment-anything checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
         "sam_vit_h_4b8939.pth, or the same weights as .safetensors)")


@dataclass
class SamConfig:
    """Everything needed to rebuild a SAM v1 model; ``infer_sam_config`` fills it from weights."""
    model_type: str = "vit_b"
    img_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_mlp_ratio: float = 4.0
    encoder_qkv_bias: bool = True
    encoder_use_rel_pos: bool = True
    encoder_window_size: int = 14
    encoder_global_attn_indexes: tuple = (2, 5, 8, 11)
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    decoder_attention_downsample_rate: int = 2
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple = field(default=(123.675, 116.28, 103.53))
    pixel_std: tuple = field(default=(58.395, 57.12, 57.375))


def read_state_dict(path) -> dict:
    """Tensors from a .safetensors / .pth / .pt file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise MIDILoadError(f"SAM checkpoint {path} does not exist: put a SAM file in models/sams/ ({_HINT})")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, pickled objects, not a weights file at all
        raise MIDILoadError(
            f"cannot read SAM checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}): "
            f"the file is damaged or not a plain weights file; {_HINT}") from None
    # some trainers wrap the weights
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise MIDILoadError(f"SAM checkpoint {path} does not hold a state dict of tensors; {_HINT}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _count(sd: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
    return max(idx) + 1 if idx else 0


def _heads_dividing(dims, preferred: int) -> int:
    for h in range(preferred, 0, -1):
        if all(d % h == 0 for d in dims):
            return h
    return 1


def check_is_sam(sd: dict, source: str = "checkpoint") -> None:
    missing = [k for k in _REQUIRED if k not in sd]
    if not missing:
        return
    keys = list(sd)
    if any(k.startswith("vision_encoder.") for k in keys):
        what = "a Hugging Face transformers SAM (SamModel) state dict"
    elif any(".trunk." in k or k.startswith("sam_mask_decoder.") for k in keys):
        what = "a SAM 2 checkpoint (not supported)"
    else:
        what = f"not a SAM v1 checkpoint (missing {missing[0]}; it has keys like {keys[:3]})"
    raise MIDILoadError(f"SAM {source} is {what}; {_HINT}")


def infer_sam_config(sd: dict, overrides: dict | None = None, source: str = "checkpoint") -> SamConfig:
    """Read the architecture from tensor shapes; ``overrides`` (SamConfig field names) wins."""
    check_is_sam(sd, source)
    enc = "image_encoder."
    pw = sd[enc + "patch_embed.proj.weight"]
    embed, in_chans, patch = int(pw.shape[0]), int(pw.shape[1]), int(pw.shape[2])
    grid = int(sd[enc + "pos_embed"].shape[1])
    depth = _count(sd, enc + "blocks.")
    if depth == 0:
        raise MIDILoadError(f"SAM {source} has no image_encoder.blocks.*; {_HINT}")
    known = _KNOWN.get(embed)
    cfg = SamConfig(
        model_type=known[0] if known else f"custom_{embed}x{depth}",
        img_size=grid * patch, patch_size=patch, in_chans=in_chans,
        encoder_embed_dim=embed, encoder_depth=depth,
        encoder_mlp_ratio=sd[enc + "blocks.0.mlp.lin1.weight"].shape[0] / embed,
        encoder_qkv_bias=enc + "blocks.0.attn.qkv.bias" in sd,
        encoder_use_rel_pos=enc + "blocks.0.attn.rel_pos_h" in sd,
    )
    if cfg.encoder_use_rel_pos:
        # rel-pos tables are (2*side-1, head_dim): side = grid for global blocks, window otherwise
        sides = [(int(sd[f"{enc}blocks.{i}.attn.rel_pos_h"].shape[0]) + 1) // 2 for i in range(depth)]
        head_dim = int(sd[enc + "blocks.0.attn.rel_pos_h"].shape[1])
        cfg.encoder_num_heads = max(1, embed // head_dim)
        cfg.encoder_global_attn_indexes = tuple(i for i, s in enumerate(sides) if s == grid)
        windows = {s for s in sides if s != grid}
        cfg.encoder_window_size = windows.pop() if len(windows) == 1 else 0
        if len(windows) > 0:
            raise MIDILoadError(f"SAM {source}: image-encoder blocks use several window sizes; not a SAM v1 layout")
    else:
        # nothing in the weights says how attention was split: released layout or a divisor
        cfg.encoder_num_heads = known[1] if known else _heads_dividing([embed], max(1, embed // 64))
        cfg.encoder_window_size = 14
        cfg.encoder_global_attn_indexes = tuple(sorted({max(0, depth * k // 4 - 1) for k in (1, 2, 3, 4)}))
    cfg.prompt_embed_dim = int(sd[enc + "neck.0.weight"].shape[0]) if enc + "neck.0.weight" in sd else \
        int(sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape[1]) * 2
    cfg.mask_in_chans = int(sd["prompt_encoder.mask_downscaling.3.weight"].shape[0])
    dec = "mask_decoder."
    dim = int(sd[dec + "iou_token.weight"].shape[1])
    cfg.num_multimask_outputs = int(sd[dec + "mask_tokens.weight"].shape[0]) - 1
    cfg.decoder_depth = _count(sd, dec + "transformer.layers.")
    cfg.decoder_mlp_dim = int(sd[dec + "transformer.layers.0.mlp.lin1.weight"].shape[0])
    internal = int(sd[dec + "transformer.final_attn_token_to_image.q_proj.weight"].shape[0])
    cfg.decoder_attention_downsample_rate = max(1, dim // internal)
    # decoder heads leave no trace in the weights: SAM uses 8; else the largest divisor below
    cfg.decoder_num_heads = _heads_dividing([dim, internal], 8)
    cfg.iou_head_depth = _count(sd, dec + "iou_prediction_head.layers.")
    cfg.iou_head_hidden_dim = int(sd[dec + "iou_prediction_head.layers.0.weight"].shape[0])
    for k, v in (overrides or {}).items():
        if not hasattr(cfg, k):
            raise MIDILoadError(f"unknown SAM config override {k!r}; valid: {sorted(asdict(cfg))}")
        setattr(cfg, k, tuple(v) if isinstance(v, list) else v)
    return cfg


def build_sam(cfg: SamConfig):
    """A segment-anything ``Sam`` module with random weights in the given layout."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = cfg.img_size // cfg.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
            embed_dim=cfg.encoder_embed_dim, depth=cfg.encoder_depth, num_heads=cfg.encoder_num_heads,
            mlp_ratio=cfg.encoder_mlp_ratio, out_chans=cfg.prompt_embed_dim, qkv_bias=cfg.encoder_qkv_bias,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=cfg.encoder_use_rel_pos,
            window_size=cfg.encoder_window_size, global_attn_indexes=tuple(cfg.encoder_global_attn_indexes),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim, mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads, attention_downsample_rate=cfg.decoder_attention_downsample_rate,
            ),
            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
    )
    return sam.eval()


def load_sam(path, device="cpu", config_overrides: dict | None = None):
    """SAM checkpoint file -> ``segment_anything.modeling.Sam`` in eval mode on ``device``.

    Errors (missing/damaged/wrong file, shape mismatch) are ``MIDILoadError`` naming the file."""
    path = Path(path)
    sd = read_state_dict(path)
    cfg = infer_sam_config(sd, config_overrides, source=f"checkpoint {path}")
    try:
        sam = build_sam(cfg)
    except Exception as e:
        raise MIDILoadError(f"SAM checkpoint {path}: cannot build a model of this shape ({e}); {_HINT}") from None
    try:
        result = sam.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # size mismatch: name the first key
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e)[:200])
        raise MIDILoadError(f"SAM checkpoint {path}: {first}; {_HINT}") from None
    # pixel_mean/std are non-persistent buffers, so strict key sets match the module exactly
    if result.missing_keys or result.unexpected_keys:
        extra = result.unexpected_keys[:3]
        raise MIDILoadError(
            f"SAM checkpoint {path} does not match a SAM v1 {cfg.model_type} model: missing "
            f"{result.missing_keys[:3]}, unexpected {extra}"
            f"{' (SAM-HQ and other variants are not supported)' if extra else ''}; {_HINT}")
    sam.midi_sam_config = cfg  # for display / debugging
    sam.midi_source = str(path)
    return sam.to(device)
