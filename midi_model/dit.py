"""The MIDI denoiser: TripoSG's DiT with two parallel cross-attentions and
multi-instance self-attention on a few middle blocks.

Module names follow the released ``transformer/`` state dict exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from .attention import Attention, FeedForward, FP32LayerNorm


@dataclass
class DiTConfig:
    num_attention_heads: int = 16
    width: int = 2048
    in_channels: int = 64
    num_layers: int = 21
    cross_attention_dim: int = 768
    cross_attention_2_dim: int = 1024
    # not in config.json: the official adapter sets it at load time
    mi_blocks: tuple = (8, 9, 10, 11, 12)

    @classmethod
    def from_dict(cls, d: dict) -> "DiTConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def num_tokens(self) -> int:
        # The pipeline uses the width as the number of latent tokens (2048 released).
        return self.width


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Float timesteps -> [sin, cos] embedding with frequencies exp(-ln(1e4) i / (dim/2))."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t.float()[:, None] * torch.exp(exponent)[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimeMLP(nn.Module):
    """Keyed ``time_proj.linear_1/2`` in the checkpoint (the names are swapped vs diffusers)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear_1 = nn.Linear(width, 4 * width)
        self.linear_2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(nn.functional.gelu(self.linear_1(x)))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig, skip: bool):
        super().__init__()
        w, h = cfg.width, cfg.num_attention_heads
        if skip:
            self.skip_linear = nn.Linear(2 * w, w)
            self.skip_norm = FP32LayerNorm(w, eps=1e-5)
        else:
            self.skip_linear = None
            self.skip_norm = None
        self.norm1 = FP32LayerNorm(w, eps=1e-5)
        self.attn1 = Attention(w, h, qk_norm=True)
        self.norm2 = FP32LayerNorm(w, eps=1e-5)
        self.attn2 = Attention(w, h, cross_attention_dim=cfg.cross_attention_dim, qk_norm=True)
        self.norm2_2 = FP32LayerNorm(w, eps=1e-5)
        self.attn2_2 = Attention(w, h, cross_attention_dim=cfg.cross_attention_2_dim, qk_norm=True)
        self.norm3 = FP32LayerNorm(w, eps=1e-5)
        self.ff = FeedForward(w, 4 * w)

    def forward(self, h, clip, dino, skip=None, num_instances=None):
        if self.skip_linear is not None:
            h = self.skip_norm(self.skip_linear(torch.cat([skip, h], dim=-1)))
        h = h + self.attn1(self.norm1(h), num_instances=num_instances)
        # the two cross-attentions read the same h and are added together
        h = h + self.attn2(self.norm2(h), clip) + self.attn2_2(self.norm2_2(h), dino)
        return h + self.ff(self.norm3(h))


class MIDIDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config = cfg
        w = cfg.width
        self.time_proj = TimeMLP(w)
        self.proj_in = nn.Linear(cfg.in_channels, w)
        self.middle = cfg.num_layers // 2
        self.blocks = nn.ModuleList(DiTBlock(cfg, skip=i > self.middle) for i in range(cfg.num_layers))
        self.norm_out = nn.LayerNorm(w, eps=1e-5)
        self.proj_out = nn.Linear(w, cfg.in_channels)
        self.set_multi_instance_blocks(cfg.mi_blocks)

    def set_multi_instance_blocks(self, blocks) -> None:
        blocks = tuple(int(b) for b in blocks)
        for i, block in enumerate(self.blocks):
            block.attn1.use_mi = i in blocks
        self.config.mi_blocks = blocks

    def set_attention(self, backend: str | None = None, mi_mode: str | None = None) -> None:
        for m in self.modules():
            if isinstance(m, Attention):
                if backend is not None:
                    m.backend = backend
                if mi_mode is not None:
                    m.mi_mode = mi_mode

    def forward(self, x, t, clip, dino, num_instances=None, capture=None):
        """x (B,T,C) latents, t (B,) float timesteps, clip (B,1,D1), dino (B,L,D2) -> (B,T,C).

        ``capture``: optional dict filled with internals (for parity checks).
        """
        temb = self.time_proj(timestep_sinusoid(t, self.config.width).to(x.dtype))
        h = self.proj_in(x)
        if capture is not None:
            capture["temb"], capture["proj_in"] = temb, h
        # the time vector is one extra token in front
        h = torch.cat([temb.unsqueeze(1), h], dim=1)
        skips = []
        for i, block in enumerate(self.blocks):
            skip = skips.pop() if block.skip_linear is not None else None
            h = block(h, clip, dino, skip=skip, num_instances=num_instances)
            if i < self.middle:
                skips.append(h)
            if capture is not None:
                capture[f"block{i}"] = h
        h = self.norm_out(h)
        if capture is not None:
            capture["norm_out"] = h
        return self.proj_out(h[:, 1:])
