"""Small model parts against their formulas, on tiny random modules: the VAE's frequency embedding
(with and without pi), the DiT's timestep sinusoid (even and odd widths), and the VAE decode's
chunks and progress."""
from __future__ import annotations

import math

import numpy as np
import torch

from midi_model.dit import timestep_sinusoid
from midi_model.testing import randomize
from midi_model.vae import FrequencyEmbedding, TripoSGVAE, VAEConfig


def test_frequency_embedding_formula():
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    for include_pi in (False, True):
        out = FrequencyEmbedding(4, include_pi)(x).double().numpy()
        xs = x.double().numpy()
        f = 2.0 ** np.arange(4) * (math.pi if include_pi else 1.0)
        arg = (xs[..., None] * f).reshape(2, 5, 12)          # x's 4 frequencies, then y's, then z's
        want = np.concatenate([xs, np.sin(arg), np.cos(arg)], axis=-1)
        np.testing.assert_allclose(out, want, atol=1e-5, err_msg=f"include_pi={include_pi}")


def test_timestep_sinusoid_formula():
    t = torch.tensor([0.0, 1.0, 250.5, 999.0])
    for dim in (8, 9, 64, 129):
        out = timestep_sinusoid(t, dim).double().numpy()
        half = dim // 2
        freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
        arg = t.double().numpy()[:, None] * freqs
        want = np.concatenate([np.sin(arg), np.cos(arg)] + ([np.zeros((4, 1))] if dim % 2 else []), axis=1)
        assert out.shape == (4, dim)
        np.testing.assert_allclose(out, want, atol=1e-4, err_msg=f"dim={dim}")


def test_vae_decode_in_chunks_reports_points_done():
    cfg = VAEConfig(latent_channels=4, num_attention_heads=2, width_encoder=16, width_decoder=16,
                    num_layers_encoder=1, num_layers_decoder=2, embed_frequency=2)
    torch.manual_seed(0)
    vae = randomize(TripoSGVAE(cfg)).eval()
    latents = torch.randn(1, 6, 4)
    points = torch.rand(1, 20, 3) * 2 - 1
    seen = []
    with torch.no_grad():
        whole = vae.decode(latents, points, chunk=100)
        chunked = vae.decode(latents, points, chunk=7, callback=lambda done, total: seen.append((done, total)))
    assert seen == [(7, 20), (14, 20), (20, 20)]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_set_attention_reaches_every_attention_module():
    from midi_model.attention import Attention
    from midi_model.dit import DiTConfig, MIDIDiT

    dit = MIDIDiT(DiTConfig(num_attention_heads=2, width=8, in_channels=4, num_layers=3, cross_attention_dim=6,
                            cross_attention_2_dim=5, mi_blocks=(1,)))
    attns = [m for m in dit.modules() if isinstance(m, Attention)]
    assert len(attns) == 9
    dit.set_attention(backend="math", mi_mode="exact")
    assert {(m.backend, m.mi_mode) for m in attns} == {("math", "exact")}
    dit.set_attention(mi_mode="grouped")          # the other setting is kept
    assert {(m.backend, m.mi_mode) for m in attns} == {("math", "grouped")}
    assert [b.attn1.use_mi for b in dit.blocks] == [False, True, False]


def test_rms_norm_formula_and_half_precision_weights():
    from midi_model.attention import RMSNorm

    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 64, generator=g) * 3
    norm = RMSNorm(64)                                   # diffusers' default eps, 1e-6
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64, generator=g) + 0.5)
    xd = x.double()
    unit = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x).double(), unit * norm.weight.double(), rtol=1e-6, atol=1e-6)
    # half-precision weights: the normalised x is rounded to their dtype before the product
    # (diffusers' order), so the result is bit-exact in bf16
    norm = norm.to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    xf = xb.float()
    want = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16) * norm.weight
    assert torch.equal(norm(xb), want)
    other_order = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.float()).to(torch.bfloat16)
    assert not torch.equal(other_order, want)          # so the test sees the order
