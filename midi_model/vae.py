"""TripoSG shape VAE as used by MIDI: latents -> signed field at query points.

Only the decoder runs at inference. The encoder modules exist so the released
``vae/`` state dict loads strictly (every tensor consumed); encoding needs farthest
point sampling of a surface point cloud and is not part of image-to-scene.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from .attention import Attention, FeedForward, FP32LayerNorm

DECODE_CHUNK = 50_000  # query points per VAE call (the official chunk size)


@dataclass
class VAEConfig:
    in_channels: int = 3
    latent_channels: int = 64
    num_attention_heads: int = 8
    width_encoder: int = 512
    width_decoder: int = 1024
    num_layers_encoder: int = 8
    num_layers_decoder: int = 16
    embedding_type: str = "frequency"
    embed_frequency: int = 8
    embed_include_pi: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def embed_dim(self) -> int:
        return self.in_channels * (1 + 2 * self.embed_frequency)


class FrequencyEmbedding(nn.Module):
    """xyz -> [xyz, sin(xyz * f), cos(xyz * f)], f = 2^0..2^(F-1) (times pi if asked).

    Coordinate-major inside the sin and cos blocks: x's F values, then y's, then z's.
    """

    def __init__(self, num_freqs: int, include_pi: bool):
        super().__init__()
        self.num_freqs = num_freqs
        self.include_pi = include_pi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # computed here, not stored: no buffer to materialise when loading from the meta device
        freqs = 2.0 ** torch.arange(self.num_freqs, dtype=torch.float32, device=x.device)
        if self.include_pi:
            freqs = freqs * torch.pi
        emb = (x[..., None] * freqs.to(x.dtype)).reshape(*x.shape[:-1], -1)
        return torch.cat([x, emb.sin(), emb.cos()], dim=-1)


class SelfBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = FP32LayerNorm(width, eps=1e-5)
        self.attn1 = Attention(width, heads)
        self.norm3 = FP32LayerNorm(width, eps=1e-5)
        self.ff = FeedForward(width, 4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class CrossBlock(nn.Module):
    def __init__(self, width: int, heads: int, context_dim: int):
        super().__init__()
        self.norm2 = FP32LayerNorm(width, eps=1e-5)
        self.attn2 = Attention(width, heads, cross_attention_dim=context_dim, norm_cross=True)
        self.norm3 = FP32LayerNorm(width, eps=1e-5)
        self.ff = FeedForward(width, 4 * width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, keys=None) -> torch.Tensor:
        x = x + self.attn2(self.norm2(x), context, keys=keys)
        return x + self.ff(self.norm3(x))


class VAEEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w = cfg.width_encoder
        self.proj_in = nn.Linear(cfg.embed_dim + 3, w)  # embedded xyz + normals
        self.blocks = nn.ModuleList(
            [CrossBlock(w, cfg.num_attention_heads, w)]
            + [SelfBlock(w, cfg.num_attention_heads) for _ in range(cfg.num_layers_encoder)]
        )
        self.norm_out = nn.LayerNorm(w)


class VAEDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w = cfg.width_decoder
        self.blocks = nn.ModuleList(
            [SelfBlock(w, cfg.num_attention_heads) for _ in range(cfg.num_layers_decoder)]
            + [CrossBlock(w, cfg.num_attention_heads, w)]
        )
        self.proj_query = nn.Linear(cfg.embed_dim, w)
        self.norm_out = nn.LayerNorm(w)
        self.proj_out = nn.Linear(w, 1)


class TripoSGVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.embedding_type != "frequency":
            raise ValueError(f"vae embedding_type {cfg.embedding_type!r} is not supported (only 'frequency')")
        self.config = cfg
        self.embedder = FrequencyEmbedding(cfg.embed_frequency, cfg.embed_include_pi)
        self.encoder = VAEEncoder(cfg)
        self.quant = nn.Linear(cfg.width_encoder, 2 * cfg.latent_channels)
        self.post_quant = nn.Linear(cfg.latent_channels, cfg.width_decoder)
        self.decoder = VAEDecoder(cfg)

    def latent_context(self, latents: torch.Tensor) -> torch.Tensor:
        """Run the decoder's self-attention stack once; reused for every query chunk."""
        x = self.post_quant(latents)
        for block in self.decoder.blocks[:-1]:
            x = block(x)
        return x

    def query_keys(self, context: torch.Tensor):
        """The query cross-attention's keys and values of ``context``: pass them to ``query``
        when it is called block after block on one context."""
        return self.decoder.blocks[-1].attn2.context_keys(context)

    def query(self, context: torch.Tensor, points: torch.Tensor, keys=None) -> torch.Tensor:
        """context (B,T,W), points (B,P,3) -> field values (B,P,1); the sign is flipped
        as in the official decoder. ``keys``: ``query_keys(context)``, else computed here."""
        dec = self.decoder
        q = dec.proj_query(self.embedder(points.to(context.dtype)))
        q = dec.blocks[-1](q, context, keys)
        return -dec.proj_out(dec.norm_out(q))

    def decode(self, latents: torch.Tensor, points: torch.Tensor, chunk: int = DECODE_CHUNK,
               callback=None) -> torch.Tensor:
        """latents (B,T,C), points (B,P,3) -> (B,P,1), in chunks of query points."""
        context = self.latent_context(latents)
        outs = []
        total = points.shape[1]
        for start in range(0, total, chunk):
            outs.append(self.query(context, points[:, start:start + chunk]))
            if callback is not None:
                callback(min(start + chunk, total), total)
        return torch.cat(outs, dim=1)
