"""Grouped multi-instance attention (one K/V copy per scene) == the official exact path
(K/V repeated for every instance)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midi_model.attention import multi_instance_attend


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("n,scenes", [(1, 2), (3, 2), (5, 1)])
def test_grouped_equals_exact_random(backend, n, scenes):
    g = torch.Generator().manual_seed(n * 10 + scenes)
    q, k, v = (torch.randn(scenes * n, 4, 17, 32, generator=g) for _ in range(3))
    exact = multi_instance_attend(q, k, v, n, backend, "exact")
    grouped = multi_instance_attend(q, k, v, n, backend, "grouped")
    torch.testing.assert_close(grouped, exact, atol=2e-6, rtol=0)


def test_instances_see_each_other():
    """Changing instance 1's keys changes instance 0's output (it is not plain self-attention)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g) for _ in range(3))
    base = multi_instance_attend(q, k, v, 2)
    k2 = k.clone()
    k2[1] += 1.0
    assert not torch.allclose(multi_instance_attend(q, k2, v, 2)[0], base[0])


def test_bad_batch_rejected():
    x = torch.zeros(5, 1, 3, 4)
    with pytest.raises(ValueError):
        multi_instance_attend(x, x, x, 2)


def _sample(pipe, golden, mode, steps=2):
    pipe.transformer.set_attention(mi_mode=mode)
    try:
        from midi_model.sampling import sample

        cond1 = torch.from_numpy(golden["image_embeds_1"])
        cond2 = torch.from_numpy(golden["image_embeds_2"])
        return sample(pipe.transformer, cond1, cond2, torch.from_numpy(golden["initial_noise"]), steps, 7.0)
    finally:
        pipe.transformer.set_attention(mi_mode="grouped")


def test_grouped_equals_exact_golden(golden_pipe, golden):
    exact = _sample(golden_pipe, golden, "exact")
    grouped = _sample(golden_pipe, golden, "grouped")
    bound = 1e-5 * float(exact.abs().max())
    assert float((grouped - exact).abs().max()) <= bound


def test_grouped_equals_exact_random_checkpoint(tmp_path):
    from midi_model.pipeline import MIDIPipeline
    from midi_model.testing import write_random_checkpoint

    root = write_random_checkpoint(tmp_path / "m", "tiny", seed=3)
    pipe = MIDIPipeline.from_pretrained(root, device="cpu", dtype="fp32")
    cfg = pipe.transformer.config
    g = torch.Generator().manual_seed(1)
    n = 4
    golden_like = {"image_embeds_1": torch.randn(n, 1, cfg.cross_attention_dim, generator=g).numpy(),
                   "image_embeds_2": torch.randn(n, 9, cfg.cross_attention_2_dim, generator=g).numpy(),
                   "initial_noise": torch.randn(n, cfg.num_tokens, cfg.in_channels, generator=g).numpy()}
    exact = _sample(pipe, golden_like, "exact")
    grouped = _sample(pipe, golden_like, "grouped")
    assert np.isfinite(exact.numpy()).all()
    bound = 1e-5 * max(1.0, float(exact.abs().max()))
    assert float((grouped - exact).abs().max()) <= bound
    # the bound can tell multi-instance attention from none: without it the result moves
    # by far more (random norms near 1 keep attention sharp; see testing.randomize)
    blocks = cfg.mi_blocks
    pipe.transformer.set_multi_instance_blocks(())
    try:
        alone = _sample(pipe, golden_like, "exact")
    finally:
        pipe.transformer.set_multi_instance_blocks(blocks)
    assert float((alone - exact).abs().max()) > 100 * bound


def test_a_new_transformer_runs_grouped_sdpa_attention():
    """Without set_attention (a module built directly, not through from_pretrained) the
    multi-instance blocks use the grouped form and SDPA, and run."""
    from midi_model.attention import Attention
    from midi_model.dit import DiTConfig, MIDIDiT

    dit = MIDIDiT(DiTConfig(num_attention_heads=2, width=8, in_channels=4, num_layers=3, cross_attention_dim=4,
                            cross_attention_2_dim=6, mi_blocks=(1,)))
    attns = [m for m in dit.modules() if isinstance(m, Attention)]
    assert {(a.mi_mode, a.backend) for a in attns} == {("grouped", "sdpa")}
    assert [b.attn1.use_mi for b in dit.blocks] == [False, True, False]
    out = dit(torch.randn(4, 8, 4), torch.full((4,), 500.0), torch.randn(4, 1, 4), torch.randn(4, 3, 6), num_instances=2)
    assert out.shape == (4, 8, 4) and torch.isfinite(out).all()
    # the config follows (recorded with trajectories, so a re-roll can refuse another model)
    dit.set_multi_instance_blocks([0, 2])
    assert dit.config.mi_blocks == (0, 2) and [b.attn1.use_mi for b in dit.blocks] == [True, False, True]
