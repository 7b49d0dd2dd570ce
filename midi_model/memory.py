"""Working memory of each stage (activations, not weights), for a host that makes room before a
stage runs (ComfyUI: ``load_models_gpu(memory_required=...)`` offloads other models first).

Rules of thumb in the spirit of ComfyUI's VAE ``memory_used_decode``, from the model configs:
a transformer runs block by block, so the peak is the tensors one block keeps alive at once,
``BLOCK_WIDTHS`` (tokens x width) tensors per batch item (input, residual, q/k/v, attention output,
the 4x-wide MLP hidden and spare). The attention matrix is added only for the ``math`` backend
(and for SAM, whose attention always materialises it); SDPA kernels do not keep it.
"""
from __future__ import annotations

import torch

BLOCK_WIDTHS = 12


def _elem(module: torch.nn.Module) -> int:
    p = next(module.parameters())
    return p.element_size()


def block_bytes(batch: int, tokens: int, width: int, elem: int, heads: int = 0, context: int = 0) -> int:
    """Peak bytes of one transformer block; ``heads`` > 0 adds a materialised tokens x context
    attention matrix (scores and softmax) per head."""
    out = batch * tokens * width * BLOCK_WIDTHS * elem
    if heads:
        out += 2 * batch * heads * tokens * context * elem
    return int(out)


def _backend(module: torch.nn.Module) -> str:
    for m in module.modules():
        if hasattr(m, "backend"):
            return m.backend
    return "sdpa"


def _encoder_bytes(model, batch: int) -> int:
    cfg = model.config
    tokens = (int(cfg.image_size) // int(cfg.patch_size)) ** 2 + 1
    eager = getattr(cfg, "_attn_implementation", "sdpa") == "eager"
    return block_bytes(batch, tokens, int(cfg.hidden_size), _elem(model),
                       int(cfg.num_attention_heads) if eager else 0, tokens)


def encode_bytes(pipe, num_instances: int) -> int:
    """Both image encoders, one after the other, on ``num_instances`` crops."""
    return max(_encoder_bytes(pipe.image_encoder_1, num_instances),
               _encoder_bytes(pipe.image_encoder_2, num_instances))


def sample_bytes(pipe, num_instances: int, guidance_scale: float) -> int:
    """One DiT step: CFG doubles the batch; the multi-instance blocks attend across all objects."""
    cfg = pipe.transformer.config
    batch = num_instances * (2 if guidance_scale > 1.0 else 1)
    math_backend = _backend(pipe.transformer) == "math"
    tokens = cfg.num_tokens
    heads = cfg.num_attention_heads if math_backend else 0
    own = block_bytes(batch, tokens, cfg.width, _elem(pipe.transformer), heads, tokens)
    joint = block_bytes(batch, tokens, cfg.width, _elem(pipe.transformer), heads, tokens * num_instances)
    return max(own, joint)


def decode_bytes(pipe, num_instances: int, chunk: int, decoder: str) -> int:
    """The latent context of every object, plus one chunk of grid queries (all objects at once for
    the official decoders, one object at a time for the coarse-to-fine ones)."""
    from .meshing import HIERARCHICAL

    cfg = pipe.vae.config
    elem = _elem(pipe.vae)
    tokens = pipe.transformer.config.num_tokens
    heads = cfg.num_attention_heads if _backend(pipe.vae) == "math" else 0
    context = block_bytes(num_instances, tokens, cfg.width_decoder, elem, heads, tokens)
    batch = 1 if decoder in HIERARCHICAL else num_instances
    queries = block_bytes(batch, chunk, cfg.width_decoder, elem, heads, tokens)
    return context + queries


def sam_bytes(sam) -> int:
    """SAM's image encoder at its input size (1024 px): its global-attention blocks materialise the
    full attention matrix."""
    enc = sam.image_encoder
    patch = enc.patch_embed.proj
    tokens = (int(enc.img_size) // int(patch.kernel_size[0])) ** 2
    heads = int(enc.blocks[0].attn.num_heads)
    return block_bytes(1, tokens, int(patch.out_channels), _elem(sam), heads, tokens)


def grounding_dino_bytes(model, pixels: int = 800 * 1333) -> int:
    """Grounding DINO at the processor's largest input (shortest side 800, longest 1333): the
    backbone's first stage (stride 4) and the deformable encoder over the multi-scale features
    (strides 8..64, d_model wide)."""
    cfg = model.config
    elem = _elem(model)
    backbone = getattr(cfg, "backbone_config", None)
    width = int(getattr(backbone, "embed_dim", 96) or 96)
    stem = block_bytes(1, pixels // 16, width, elem)
    levels = sum(pixels // (s * s) for s in (8, 16, 32, 64))
    encoder = block_bytes(1, levels, int(getattr(cfg, "d_model", 256)), elem)
    return max(stem, encoder)

