"""The golden run piece by piece, each piece from the golden run's own inputs (so one wrong
number shows in under a second; ``test_golden_parity.py`` runs the whole chain). The mutation
run (``bench/mutation.py``) starts with these."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_close as close
from midi_model.inputs import split_label_map
from midi_model.sampling import euler_step, guide, rectified_flow_schedule

STEPS = 4


def t(a):
    return torch.from_numpy(np.asarray(a))


def test_schedule_guidance_and_euler_steps(golden):
    timesteps, sigmas = rectified_flow_schedule(STEPS)
    np.testing.assert_array_equal(timesteps.numpy(), golden["timesteps"])
    np.testing.assert_array_equal(sigmas.numpy(), golden["sigmas"])
    for i in range(STEPS):
        guided = guide(t(golden[f"step{i}_transformer_out"]), 7.0)
        close(f"step{i}_guided", guided, golden[f"step{i}_guided"])
        n = guided.shape[0]
        lat = euler_step(t(golden[f"step{i}_model_input"])[n:], t(golden[f"step{i}_guided"]), sigmas[i], sigmas[i + 1])
        close(f"step{i}_latents_out", lat, golden[f"step{i}_latents_out"])


def test_transformer_step0_from_golden_inputs(golden_pipe, golden):
    e1, e2 = t(golden["image_embeds_1"]), t(golden["image_embeds_2"])
    capture = {}
    with torch.no_grad():
        v = golden_pipe.transformer(t(golden["step0_model_input"]), t(golden["step0_timestep"]),
                                    torch.cat([torch.zeros_like(e1), e1]), torch.cat([torch.zeros_like(e2), e2]),
                                    num_instances=e1.shape[0], capture=capture)
    for key in ("temb", "proj_in", "block0", "block10", "block20", "norm_out"):
        close(key, capture[key], golden[f"step0_{key}"])
    close("step0_transformer_out", v, golden["step0_transformer_out"])


def test_encoder_from_golden_inputs(golden_pipe, golden):
    ids, masks = split_label_map(golden["inputs_seg"], max_instances=3)
    np.testing.assert_array_equal(ids, golden["instance_ids"])
    from midi_model.conditioning import build_conditioning

    p = golden_pipe  # the library call with its defaults (the official run: no image padding)
    cond = build_conditioning(golden["inputs_rgb"], masks, p.image_encoder_1, p.image_encoder_2,
                              p.feature_extractor_1, p.feature_extractor_2)
    np.testing.assert_array_equal(cond.instance_rgb, golden["instance_rgb"])
    np.testing.assert_array_equal(cond.instance_mask, golden["instance_mask"])
    close("clip_pixel_values", cond.extras["clip_pixel_values"], golden["clip_pixel_values"], 1e-6)
    close("dino_pixel_values", cond.extras["dino_pixel_values"], golden["dino_pixel_values"], 1e-6)
    close("image_embeds_1", cond.image_embeds_1, golden["image_embeds_1"])
    close("image_embeds_2", cond.image_embeds_2, golden["image_embeds_2"])


def test_vae_from_golden_latents(golden_pipe, golden):
    with torch.no_grad():
        vals = golden_pipe.vae.decode(t(golden["final_latents"]), t(golden["vae_query_points"]), chunk=100)
    close("vae_query_values", vals, golden["vae_query_values"])


def test_shifted_schedule():
    """sigma' = shift * s / (1 + (shift - 1) * s) (the released scheduler has shift 1, where it is s)."""
    timesteps, sigmas = rectified_flow_schedule(2, shift=3.0, num_train_timesteps=500)
    np.testing.assert_allclose(sigmas.numpy(), [1.0, 0.75, 0.0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(timesteps.numpy(), [500.0, 375.0], rtol=0, atol=1e-4)


def test_sampler_defaults_are_the_released_scheduler(golden_model_dir):
    import inspect
    import json

    from midi_model.sampling import sample

    cfg = json.loads((golden_model_dir / "scheduler" / "scheduler_config.json").read_text())
    params = inspect.signature(sample).parameters
    assert params["shift"].default == cfg["shift"] == 1.0
    assert params["num_train_timesteps"].default == cfg["num_train_timesteps"] == 1000
    assert params["steps"].default == 50 and params["guidance_scale"].default == 7.0


class _MeanOfContext(torch.nn.Module):
    """A velocity that is the mean of the DINO context: zeros in the unconditional branch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, t, clip, dino, num_instances=None, capture=None):
        return x * 0 + self.w * dino.mean(dim=(1, 2))[:, None, None]


@pytest.mark.parametrize("guidance", [0.5, 1.0, 1.5, 7.0])
def test_cfg_runs_exactly_above_one(guidance):
    """The official rule: classifier-free guidance when guidance_scale > 1 (v = u + g (c - u)),
    else the conditional branch alone; one step from sigma 1 to 0 adds v to the noise."""
    from midi_model.sampling import sample

    noise = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    dino = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6) / 10
    out = sample(_MeanOfContext(), torch.zeros(2, 1, 8), dino, noise, steps=1, guidance_scale=guidance)
    m = dino.mean(dim=(1, 2))[:, None, None]
    expected = noise + (guidance * m if guidance > 1 else m)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_padding_squares_a_scene_with_a_one_pixel_object():
    """do_image_padding with objects well inside: no growth, only right/bottom padding to a square."""
    from midi_model.conditioning import pad_scene

    rgb = np.zeros((6, 10, 3), np.uint8)
    masks = np.zeros((1, 6, 10), bool)
    masks[0, 3, 5] = True
    out_rgb, out_masks = pad_scene(rgb, masks)
    assert out_rgb.shape == (10, 10, 3) and out_masks.shape == (1, 10, 10)
    assert (out_rgb[:6] == 0).all() and (out_rgb[6:] == 255).all()
    assert out_masks[0, 3, 5] and out_masks.sum() == 1
