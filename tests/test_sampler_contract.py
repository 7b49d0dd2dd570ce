"""The sampler's contract, on a cheap stand-in transformer (its velocity depends on the latents,
the timestep and the conditioning, so every input shows in the result): the official defaults,
CFG only above guidance 1, inputs moved to the transformer's device and dtype, a replay that
does not fit refused, and object seeds drawn on their own."""
from __future__ import annotations

import pytest
import torch

from midi_model.sampling import initial_noise, sample, scene_noise

N, T, C, D1, D2 = 2, 3, 5, 4, 6


class StandIn(torch.nn.Module):
    """velocity = 0.3 x + t / 1000 + mean(clip) - mean(dino); records what it was given."""

    def __init__(self, dtype=torch.float32, device="cpu"):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones((), dtype=dtype, device=device))
        self.calls = []

    def forward(self, x, t, clip, dino, num_instances, capture=None):
        self.calls.append({"x": x, "t": t, "clip": clip, "dino": dino, "n": num_instances})
        cond = clip.mean(dim=(1, 2)) - dino.mean(dim=(1, 2))
        return (self.w * (0.3 * x + (t / 1000 + cond)[:, None, None])).to(self.w.dtype)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, 1, D1, generator=g), torch.randn(N, 4, D2, generator=g),
            torch.randn(N, T, C, generator=g))


def test_defaults_are_the_official_run():
    clip, dino, noise = inputs()
    plain = sample(StandIn(), clip, dino, noise)
    official = sample(StandIn(), clip, dino, noise, steps=50, guidance_scale=7.0, shift=1.0,
                      num_train_timesteps=1000)
    assert torch.equal(plain, official)
    # and each of them shows in the result
    for changed in ({"steps": 49}, {"guidance_scale": 6.0}, {"shift": 2.0}, {"num_train_timesteps": 999}):
        assert not torch.equal(sample(StandIn(), clip, dino, noise, **changed), plain), changed


def test_guidance_one_runs_the_conditional_branch_only():
    clip, dino, noise = inputs()
    for scale, batch in ((1.0, N), (1.01, 2 * N)):
        model = StandIn()
        sample(model, clip, dino, noise, steps=2, guidance_scale=scale)
        assert [c["x"].shape[0] for c in model.calls] == [batch, batch], scale


def test_inputs_are_moved_to_the_transformer_dtype():
    clip, dino, noise = inputs()
    model = StandIn(torch.bfloat16)
    out = sample(model, clip, dino, noise, steps=2)
    assert out.dtype == torch.bfloat16
    for c in model.calls:
        assert {c[k].dtype for k in ("x", "clip", "dino")} == {torch.bfloat16}


def test_timesteps_are_moved_to_the_transformer_device():
    clip, dino, noise = inputs()
    model = StandIn(device="meta")  # a device other than the CPU that runs without one
    sample(model, clip, dino, noise, steps=2)
    for c in model.calls:
        assert {c[k].device.type for k in ("x", "t", "clip", "dino")} == {"meta"}


def test_a_replay_that_does_not_fit_is_refused():
    clip, dino, noise = inputs()
    kept = torch.tensor([True, False])
    for recorded in (torch.zeros(3, N, T, C), torch.zeros(4, N, T, C + 1)):
        with pytest.raises(ValueError, match="does not fit 4 steps"):
            sample(StandIn(), clip, dino, noise, steps=4, replay=(kept, recorded))


def test_an_object_seed_is_that_seed_s_own_single_draw():
    # T*C = 15: not a multiple of 16, where torch's first row of a bigger draw would differ
    for k in (0, 1):
        noise = scene_noise(N, T, C, seed=1, object_seeds={k: 7})
        assert torch.equal(noise[k], initial_noise(1, T, C, 7)[0])
        assert torch.equal(noise[1 - k], initial_noise(N, T, C, 1)[1 - k])
