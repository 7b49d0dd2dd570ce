"""The four stages as one object: load -> encode -> sample -> decode.

Each stage runs on whatever device its modules sit on at the time, so a host (ComfyUI's
model management, or ``offload.py`` here) can move modules between stages.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from . import checkpoint as ckpt
from .conditioning import MIDIConditioning, build_conditioning
from .dtypes import resolve_dtype
from . import trajectory as traj
from .errors import MIDIInputError, MIDIOutOfMemoryError
from .inputs import check_guidance, check_octree_depth, check_seed, check_steps
from .mesh_cache import mesh_key
from .meshing import DECODERS, DEFAULT_DECODER, decode_grids, grids_to_meshes
from .sampling import sample, scene_noise
from .vae import DECODE_CHUNK

log = logging.getLogger(__name__)
# Out of memory while decoding: retry with 4x smaller chunks of grid points, down to this many
# (the chunk sets the decoder's activation memory; the meshes do not depend on it).
MIN_DECODE_CHUNK = 2_000


def check_runnable(module: torch.nn.Module, stage: str) -> None:
    """fp16 weights may be stored on the CPU (offloaded), but not computed there."""
    p = next(module.parameters())
    if p.device.type == "cpu" and p.dtype == torch.float16:
        raise MIDIInputError(f"{stage}: fp16 runs only on a GPU, and the model is on the CPU: "
                             f"load it as fp32 or bf16 for the CPU")


# which modules each stage runs (offload.py and the ComfyUI loader move them by this table)
STAGES = {"encode": ("image_encoder_1", "image_encoder_2"), "sample": ("transformer",), "decode": ("vae",)}

OOM_HINTS = {
    "encode": "use fewer objects or a smaller dtype (bf16/fp16)",
    "sample": "use fewer objects, bf16/fp16, or guidance <= 1 (no CFG batch); free other models first",
    "decode": "lower octree_depth, use a hierarchical decoder, or a smaller chunk",
}


def out_of_memory_error(stage: str) -> MIDIOutOfMemoryError:
    """One line that says which setting lowers the memory of this stage (still an OOM type)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return MIDIOutOfMemoryError(f"{stage}: out of GPU memory: {OOM_HINTS[stage]}")


@contextmanager
def out_of_memory_hint(stage: str):
    """Turn a device OOM into :func:`out_of_memory_error`."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise out_of_memory_error(stage) from None


def decode_settings(octree_depth: int = 8, decoder: str = DEFAULT_DECODER, smoothing: bool = True,
                    coarse_depth: int | None = None, band: int | None = None) -> dict:
    """What decides a decoded mesh besides the latents (the key of reused meshes; the chunk
    size does not)."""
    return {"octree_depth": int(octree_depth), "decoder": str(decoder), "smoothing": bool(smoothing),
            "coarse_depth": coarse_depth, "band": band}


@dataclass
class MIDIPipeline:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    image_encoder_1: torch.nn.Module
    image_encoder_2: torch.nn.Module
    feature_extractor_1: object
    feature_extractor_2: object
    scheduler_config: dict
    folder: str = ""

    @classmethod
    def from_pretrained(cls, folder, device="cpu", dtype=None, attention_backend: str = "sdpa",
                        mi_mode: str = "grouped") -> "MIDIPipeline":
        root = ckpt.check_model_folder(folder)
        dt = resolve_dtype(dtype, device)
        pipe = cls(
            transformer=ckpt.load_transformer(root, dt, device),
            vae=ckpt.load_vae(root, dt, device),
            image_encoder_1=ckpt.load_image_encoder(root, "clip", dt, device),
            image_encoder_2=ckpt.load_image_encoder(root, "dino", dt, device),
            feature_extractor_1=ckpt.load_processor(root, 1),
            feature_extractor_2=ckpt.load_processor(root, 2),
            scheduler_config=ckpt.load_scheduler_config(root),
            folder=str(root),
        )
        pipe.transformer.set_attention(attention_backend, mi_mode)
        pipe.vae.apply(lambda m: setattr(m, "backend", attention_backend) if hasattr(m, "backend") else None)
        return pipe

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def modules(self) -> dict:
        return {name: getattr(self, name) for names in STAGES.values() for name in names}

    def to(self, device=None, dtype=None) -> "MIDIPipeline":
        for m in self.modules().values():
            m.to(device=device, dtype=dtype)
        return self

    def encode(self, image, masks, image_padding: bool = False,
               max_instances: int | None = None) -> MIDIConditioning:
        """image HxWx3 (uint8 or 0..1 floats, or PIL) + masks (N,H,W) -> conditioning."""
        check_runnable(self.image_encoder_1, "encode")
        with out_of_memory_hint("encode"):
            return build_conditioning(image, masks, self.image_encoder_1, self.image_encoder_2,
                                      self.feature_extractor_1, self.feature_extractor_2,
                                      image_padding, max_instances)

    def sample(self, cond: MIDIConditioning, seed: int = 42, steps: int = 50, guidance_scale: float = 7.0,
               callback=None, record=None, noise: torch.Tensor | None = None, object_seeds: dict | None = None,
               replay=None, trajectory: list | None = None) -> torch.Tensor:
        """-> final latents (n, T, C) float32 on the CPU.

        ``object_seeds`` {object from 0: seed}: those objects draw their own noise; ``replay``
        and ``trajectory``: see ``sampling.sample`` (``sample_recorded`` / ``resample`` use them)."""
        check_runnable(self.transformer, "sample")
        seed, steps, guidance_scale = check_seed(seed), check_steps(steps), check_guidance(guidance_scale)
        cfg = self.transformer.config
        self.check_conditioning(cond)
        if noise is None:
            noise = scene_noise(cond.num_instances, cfg.num_tokens, cfg.in_channels, seed, object_seeds)
        if record is not None:
            record["initial_noise"] = noise
        sc = self.scheduler_config
        with out_of_memory_hint("sample"):
            lat = sample(self.transformer, cond.image_embeds_1, cond.image_embeds_2, noise, steps,
                         guidance_scale, shift=float(sc.get("shift", 1.0)),
                         num_train_timesteps=int(sc.get("num_train_timesteps", 1000)),
                         callback=callback, record=record, replay=replay, trajectory=trajectory)
        return lat.float().cpu()

    def run_settings(self, steps: int, guidance_scale: float) -> dict:
        return traj.run_settings(self.transformer.config, self.scheduler_config, steps, guidance_scale)

    def sample_recorded(self, cond: MIDIConditioning, seed: int = 42, steps: int = 50, guidance_scale: float = 7.0,
                        callback=None, record=None, object_seeds: dict | None = None) -> traj.Recording:
        """``sample`` that also records every object's trajectory (final latents: ``.final``)."""
        path: list = []
        self.sample(cond, seed, steps, guidance_scale, callback, record, object_seeds=object_seeds, trajectory=path)
        n = cond.num_instances
        return traj.Recording(torch.stack(path), traj.object_fingerprints(cond), traj.scene_fingerprint(cond),
                              self.run_settings(steps, guidance_scale), int(seed), dict(object_seeds or {}),
                              [None] * n, list(range(n)))

    def resample(self, cond: MIDIConditioning, recording: traj.Recording, reroll=(), seed: int = 42, remove=(),
                 allow_new: bool = False, steps: int | None = None, guidance_scale: float | None = None,
                 callback=None, record=None, object_seeds: dict | None = None) -> traj.Recording:
        """Keep the recorded objects except ``reroll`` (input indices from 0) on their recorded
        trajectory; sample the re-rolled and new ones with ``seed`` next to them; drop ``remove``.

        ``cond`` is the recorded run's inputs, plus new objects if ``allow_new``; ``steps`` and
        ``guidance_scale`` default to the recorded ones. The re-sampled objects draw the official
        noise of ``seed`` for the scene without the removed objects (``object_seeds``, numbered
        like that scene, give objects their own draw), so re-rolling everything is a fresh run."""
        rs = recording.settings
        steps = rs["steps"] if steps is None else steps
        guidance_scale = rs["guidance"] if guidance_scale is None else guidance_scale
        sources = traj.plan(recording, cond, self.run_settings(steps, guidance_scale), reroll, remove, allow_new)
        inputs = [k for k, s in enumerate(sources) if s != "removed"]
        sources = [sources[k] for k in inputs]
        sub = traj.select_objects(cond, inputs) if len(inputs) < cond.num_instances else cond
        kept = torch.tensor([s is not None for s in sources])
        recorded = recording.latents[:, [s if s is not None else 0 for s in sources]]
        if bool(kept.all()):
            path = recorded.clone()  # nothing to sample: the kept objects as recorded
        else:
            steps_out: list = []
            self.sample(sub, seed, steps, guidance_scale, callback, record, object_seeds=object_seeds,
                        replay=(kept, recorded), trajectory=steps_out)
            path = torch.stack(steps_out)
        return traj.Recording(path, traj.object_fingerprints(sub), recording.scene, dict(rs), int(seed),
                              dict(object_seeds or {}), sources, inputs, None)

    def decode(self, latents: torch.Tensor, octree_depth: int = 8, decoder: str = DEFAULT_DECODER,
               smoothing: bool = True, callback=None, record=None, chunk: int = DECODE_CHUNK,
               coarse_depth: int | None = None, band: int | None = None):
        """-> one trimesh.Trimesh per instance, in the scene frame [-1, 1]^3.

        decoder: "progressive" / "dense" (official), or their coarse-to-fine twins
        "progressive-hierarchical" / "hierarchical" (same meshes, a few % of the queries;
        ``coarse_depth``, ``band`` tune them, see midi_model/hierarchical.py).
        Out of GPU memory: starts again with 4x smaller chunks (as ComfyUI's VAE decode falls back
        to tiles), down to ``MIN_DECODE_CHUNK`` points; then one error naming what to lower."""
        check_runnable(self.vae, "decode")
        if decoder not in DECODERS:
            raise MIDIInputError(f"decoder {decoder!r}: use one of {', '.join(DECODERS)}")
        octree_depth = check_octree_depth(octree_depth)
        self.check_latents(latents)
        chunk = int(chunk)
        while True:
            out_of_memory = False
            try:
                grids = decode_grids(self.vae, latents, octree_depth, decoder, chunk, callback, record,
                                     smoothing=smoothing, coarse_depth=coarse_depth, band=band)
                break
            except torch.OutOfMemoryError:
                if chunk <= MIN_DECODE_CHUNK:
                    raise out_of_memory_error("decode") from None
                # retry outside this block: the exception still references the failed attempt's tensors
                out_of_memory = True
            if out_of_memory:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                chunk = max(chunk // 4, MIN_DECODE_CHUNK)
                log.warning("decode: out of GPU memory, retrying with %d grid points per chunk", chunk)
        return grids_to_meshes(grids, smoothing, record)

    def decode_reusing(self, latents: torch.Tensor, cache, octree_depth: int = 8, decoder: str = DEFAULT_DECODER,
                       smoothing: bool = True, callback=None, chunk: int = DECODE_CHUNK, coarse_depth: int | None = None,
                       band: int | None = None, reusable=None):
        """``decode`` where ``cache`` (a ``MeshCache``) already holds the meshes of objects with these
        exact latents and settings (the kept objects of a re-roll); decodes only the others and
        adds them to the cache. ``reusable`` (one bool per object, default all): which objects may
        be taken from the cache. -> (meshes, number reused)."""
        settings = decode_settings(octree_depth, decoder, smoothing, coarse_depth, band)
        n = latents.shape[0]
        keys = [mesh_key(latents[i], settings) for i in range(n)]
        reusable = [True] * n if reusable is None else list(reusable)
        meshes = [cache.get(self.vae, k) if r else None for k, r in zip(keys, reusable)]
        todo = [i for i, m in enumerate(meshes) if m is None]
        if todo:
            new = self.decode(latents[todo], octree_depth=octree_depth, decoder=decoder, smoothing=smoothing,
                              callback=callback, chunk=chunk, coarse_depth=coarse_depth, band=band)
            for i, m in zip(todo, new):
                cache.put(self.vae, keys[i], m)
                meshes[i] = m
        return meshes, len(keys) - len(todo)

    def check_conditioning(self, cond) -> None:
        """Conditioning encoded by another model would fail deep inside the DiT: say so here."""
        if not hasattr(cond, "image_embeds_1") or not hasattr(cond, "image_embeds_2"):
            raise MIDIInputError(f"conditioning: expected MIDI conditioning from encode(), got {type(cond).__name__}")
        cfg = self.transformer.config
        got = (int(cond.image_embeds_1.shape[-1]), int(cond.image_embeds_2.shape[-1]))
        want = (cfg.cross_attention_dim, cfg.cross_attention_2_dim)
        if got != want:
            raise MIDIInputError(f"conditioning has embeddings of width {got[0]}/{got[1]} but this model takes "
                                 f"{want[0]}/{want[1]}: it was encoded with another model; encode again with this one")

    def check_latents(self, latents) -> None:
        """Latents sampled by another model would fail deep inside the VAE: say so here."""
        if not torch.is_tensor(latents) or latents.ndim != 3:
            raise MIDIInputError(f"latents: expected (objects, tokens, channels) from sample(), got "
                                 f"{tuple(latents.shape) if hasattr(latents, 'shape') else type(latents).__name__}")
        want = (self.transformer.config.num_tokens, self.vae.config.latent_channels)
        got = (int(latents.shape[1]), int(latents.shape[2]))
        if got != want:
            raise MIDIInputError(f"latents are {got[0]} tokens x {got[1]} channels but this model makes "
                                 f"{want[0]} x {want[1]}: they were sampled with another model; sample again "
                                 f"with this one")
        if not torch.isfinite(latents).all():
            raise MIDIInputError("latents contain NaN or infinite values: sample again (with fp32 or bf16 if "
                                 "fp16 overflowed)")

    def __call__(self, image, masks, seed: int = 42, steps: int = 50, guidance_scale: float = 7.0,
                 octree_depth: int = 8, decoder: str = DEFAULT_DECODER, image_padding: bool = False,
                 smoothing: bool = True):
        cond = self.encode(image, masks, image_padding)
        lat = self.sample(cond, seed, steps, guidance_scale)
        return self.decode(lat, octree_depth, decoder, smoothing)

