"""Rectified-flow sampling with classifier-free guidance, as the official pipeline runs it."""
from __future__ import annotations

import numpy as np
import torch


def rectified_flow_schedule(steps: int, shift: float = 1.0, num_train_timesteps: int = 1000):
    """-> (timesteps (S,), sigmas (S+1,)) float32: sigma_i = 1 - i/S (shifted), t = 1000*sigma, sigma_S = 0."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    sig = np.array([1.0 - i / steps for i in range(steps)])
    sig = shift * sig / (1 + (shift - 1) * sig)
    sigmas = torch.from_numpy(sig).to(torch.float32)
    timesteps = sigmas * num_train_timesteps
    return timesteps, torch.cat([sigmas, torch.zeros(1)])


def initial_noise(num_instances: int, num_tokens: int, channels: int, seed: int) -> torch.Tensor:
    """One (n, T, C) draw from a CPU generator in float32, so a seed means one scene on every device."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((num_instances, num_tokens, channels), generator=g, dtype=torch.float32)


def scene_noise(num_instances: int, num_tokens: int, channels: int, seed: int,
                object_seeds: dict | None = None) -> torch.Tensor:
    """The official draw from ``seed``; object k (from 0) in ``object_seeds`` gets its own
    (T, C) draw from its seed instead, whatever the object count or its position."""
    noise = initial_noise(num_instances, num_tokens, channels, seed)
    for k, s in (object_seeds or {}).items():
        if not 0 <= int(k) < num_instances:
            raise ValueError(f"object seed for object {int(k) + 1}: the scene has {num_instances} objects")
        noise[int(k)] = initial_noise(1, num_tokens, channels, s)[0]
    return noise


def euler_step(latents: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor):
    """x <- x + (sigma - sigma_next) * v, computed in float32 and cast to the velocity dtype
    (the official sign: the model predicts v ~ x0 - noise)."""
    out = latents.float() + (sigma - sigma_next) * velocity
    return out.to(velocity.dtype)


def guide(v: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """CFG on a [uncond; cond] batch."""
    v_uncond, v_cond = v.chunk(2)
    return v_uncond + guidance_scale * (v_cond - v_uncond)


@torch.no_grad()
def sample(transformer, clip: torch.Tensor, dino: torch.Tensor, noise: torch.Tensor, steps: int = 50,
           guidance_scale: float = 7.0, shift: float = 1.0, num_train_timesteps: int = 1000,
           callback=None, record=None, replay=None, trajectory: list | None = None) -> torch.Tensor:
    """Run the sampler; the transformer's device and dtype decide where it runs.

    clip (n,1,D1) and dino (n,L,D2) are the conditional embeddings; the unconditional
    branch gets zeros. ``callback(done, steps)`` runs after every step (raise to cancel).
    ``record``: optional dict receiving per-step tensors (parity checks, --dump-internals).
    ``replay``: optional (kept (n,) bool, recorded (S+1, n, T, C)): at every step the kept
    objects hold their recorded latents, the others are denoised in the same forward pass,
    attending to the kept ones as they were at that step (``trajectory.py``).
    ``trajectory``: optional list receiving the latents before the first step and after
    every step, float32 on the CPU (S+1 tensors of (n, T, C)).
    """
    p = next(transformer.parameters())
    device, dtype = p.device, p.dtype
    n = noise.shape[0]
    cfg = guidance_scale > 1.0
    clip = clip.to(device, dtype)
    dino = dino.to(device, dtype)
    if cfg:
        clip = torch.cat([torch.zeros_like(clip), clip])
        dino = torch.cat([torch.zeros_like(dino), dino])
    timesteps, sigmas = rectified_flow_schedule(steps, shift, num_train_timesteps)
    if record is not None:
        record["timesteps"], record["sigmas"] = timesteps, sigmas
    timesteps, sigmas = timesteps.to(device), sigmas.to(device)
    latents = noise.to(device, dtype)
    if replay is not None:
        kept, recorded = replay
        if recorded.shape[0] != steps + 1 or recorded.shape[1:] != noise.shape:
            raise ValueError(f"recorded trajectory {tuple(recorded.shape)} does not fit {steps} steps of "
                             f"{tuple(noise.shape)} latents")
        kept = torch.as_tensor(kept, dtype=torch.bool).to(device)[:, None, None]
        latents = torch.where(kept, recorded[0].to(device, dtype), latents)
    if trajectory is not None:
        trajectory.append(latents.float().cpu())
    for i in range(steps):
        x_in = torch.cat([latents, latents]) if cfg else latents
        t = timesteps[i].expand(x_in.shape[0])
        capture = {} if (record is not None and i == 0) else None
        v = transformer(x_in, t, clip, dino, num_instances=n, capture=capture)
        v_guided = guide(v, guidance_scale) if cfg else v
        latents = euler_step(latents, v_guided, sigmas[i], sigmas[i + 1])
        if replay is not None:
            latents = torch.where(kept, recorded[i + 1].to(device, dtype), latents)
        if trajectory is not None:
            trajectory.append(latents.float().cpu())
        if record is not None:
            record[f"step{i}_model_input"] = x_in
            record[f"step{i}_timestep"] = t
            record[f"step{i}_transformer_out"] = v
            record[f"step{i}_guided"] = v_guided
            record[f"step{i}_latents_out"] = latents
            if capture is not None:
                record.update({f"step0_{k}": val for k, val in capture.items()})
        if callback is not None:
            callback(i + 1, steps)
    return latents
