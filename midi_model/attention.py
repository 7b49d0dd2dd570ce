"""Attention as the MIDI / TripoSG checkpoints lay it out.

The released weights were converted from a fused (heads, 3, head_dim) projection, so
the per-head split is unusual: self-attention concatenates ``[to_q|to_k|to_v]`` and
splits *each head's* slice into q, k, v; cross-attention does the same with
``[to_k|to_v]``. Module names (``to_q``, ``to_out.0``, ``norm_q`` ...) match the
checkpoint keys so state dicts load unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# "sdpa": torch's fused scaled_dot_product_attention (flash / memory-efficient on CUDA);
# "math": plain softmax(QK^T)V, the reference the fused kernels are checked against.
ATTENTION_BACKENDS = ("sdpa", "math")
# "exact": multi-instance keys/values copied to every instance, as the official code does;
# "grouped": the queries of one scene attend once over the scene's tokens (memory linear in N).
MI_MODES = ("grouped", "exact")


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32 (as diffusers' RMSNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        var = x.float().pow(2).mean(-1, keepdim=True)
        x = x.float() * torch.rsqrt(var + self.eps)
        w = self.weight
        if w.dtype in (torch.float16, torch.bfloat16):
            x = x.to(w.dtype)
        return (x * w).to(dtype)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, as the official blocks do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """(B, h, Lq, d) x (B, h, Lk, d) -> (B, h, Lq, d), scale 1/sqrt(d), no mask."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if backend == "math":
        scale = 1.0 / math.sqrt(q.shape[-1])
        w = torch.softmax((q @ k.transpose(-1, -2)).float() * scale, dim=-1).to(v.dtype)
        return w @ v
    raise ValueError(f"attention backend {backend!r}: use one of {ATTENTION_BACKENDS}")


def multi_instance_attend(q, k, v, num_instances: int, backend: str = "sdpa", mode: str = "grouped"):
    """Self-attention where each scene's instances attend over all the scene's tokens.

    The batch holds contiguous groups of ``num_instances`` items (one group per CFG half).
    """
    bn, h, t, d = k.shape
    n = num_instances
    if bn % n:
        raise ValueError(f"batch of {bn} is not a whole number of scenes with {n} instances")
    b = bn // n
    # (B*n, h, T, d) -> (B, h, n*T, d): instance-major token concatenation
    kg = k.view(b, n, h, t, d).transpose(1, 2).reshape(b, h, n * t, d)
    vg = v.view(b, n, h, t, d).transpose(1, 2).reshape(b, h, n * t, d)
    if mode == "exact":
        kg = kg.repeat_interleave(n, dim=0)
        vg = vg.repeat_interleave(n, dim=0)
        return attend(q, kg, vg, backend)
    if mode == "grouped":
        # Queries never interact, so one scene's n*T queries can share one K/V copy.
        qg = q.view(b, n, h, t, d).transpose(1, 2).reshape(b, h, n * t, d)
        out = attend(qg, kg, vg, backend)
        return out.view(b, h, n, t, d).transpose(1, 2).reshape(bn, h, t, d)
    raise ValueError(f"multi-instance mode {mode!r}: use one of {MI_MODES}")


class Attention(nn.Module):
    """diffusers-style Attention with the checkpoint's per-head q/k/v re-split.

    ``cross_attention_dim`` None -> self-attention. ``qk_norm`` adds RMSNorm on q and k
    per head (the DiT); ``norm_cross`` LayerNorms the context first (the VAE).
    """

    def __init__(self, query_dim: int, heads: int, cross_attention_dim: int | None = None,
                 qk_norm: bool = False, norm_cross: bool = False, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.head_dim = query_dim // heads
        self.is_cross = cross_attention_dim is not None
        kv_dim = cross_attention_dim if self.is_cross else query_dim
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(kv_dim, query_dim, bias=False)
        self.to_v = nn.Linear(kv_dim, query_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim, bias=True), nn.Dropout(0.0)])
        self.norm_q = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.norm_k = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.norm_cross = nn.LayerNorm(kv_dim) if norm_cross else None
        self.backend = "sdpa"
        self.use_mi = False  # set on the multi-instance self-attentions
        self.mi_mode = "grouped"

    def context_keys(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of ``context``, (B, h, T, d) each. ``forward`` takes
        them as ``keys`` when many blocks of queries attend to one context (the VAE's point
        queries): the same values, computed once."""
        h, d = self.heads, self.head_dim
        if self.norm_cross is not None:
            context = self.norm_cross(context)
        kv = torch.cat([self.to_k(context), self.to_v(context)], dim=-1)
        kv = kv.view(context.shape[0], context.shape[1], h, 2 * d)
        k, v = kv.split(d, dim=-1)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                num_instances: int | None = None, keys: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        b, t, _ = x.shape
        h, d = self.heads, self.head_dim
        if self.is_cross:
            q = self.to_q(x).view(b, t, h, d).transpose(1, 2)
            k, v = self.context_keys(context) if keys is None else keys
        else:
            qkv = torch.cat([self.to_q(x), self.to_k(x), self.to_v(x)], dim=-1).view(b, t, h, 3 * d)
            q, k, v = (z.transpose(1, 2) for z in qkv.split(d, dim=-1))
        if self.norm_q is not None:
            q = self.norm_q(q)
            k = self.norm_k(k)
        if self.use_mi and num_instances:
            out = multi_instance_attend(q, k, v, num_instances, self.backend, self.mi_mode)
        else:
            out = attend(q, k, v, self.backend)
        out = out.transpose(1, 2).reshape(b, t, h * d).to(q.dtype)
        return self.to_out[1](self.to_out[0](out))


class FeedForward(nn.Module):
    """Linear -> exact GELU -> Linear, keyed ``net.0.proj`` / ``net.2`` like diffusers."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.net = nn.ModuleList([_GELUProj(dim, inner_dim), nn.Dropout(0.0), nn.Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class _GELUProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))
