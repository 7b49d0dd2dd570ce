"""Meshes of single objects, kept by (exact latents, decode settings) so a kept object's
decode is reused instead of repeated (re-rolls keep objects' latents bit for bit)."""
from __future__ import annotations

import hashlib
import json
import weakref
from collections import OrderedDict

import numpy as np
import torch


def mesh_key(latents: torch.Tensor, settings: dict) -> str:
    """Digest of one object's latents (T, C), as float32 bytes, and the decode settings."""
    a = np.ascontiguousarray(latents.detach().float().cpu().numpy())
    h = hashlib.sha256(f"{a.shape}".encode())
    h.update(a.tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


class MeshCache:
    """Least-recently-used meshes per VAE module (weakly held: a dropped model drops its meshes)."""

    def __init__(self, max_bytes: int = 512 << 20):
        self.max_bytes = int(max_bytes)
        self._by_vae = weakref.WeakKeyDictionary()

    def _store(self, vae) -> OrderedDict:
        return self._by_vae.setdefault(vae, OrderedDict())

    def get(self, vae, key: str):
        store = self._store(vae)
        mesh = store.get(key)
        if mesh is None:
            return None
        store.move_to_end(key)
        return mesh.copy()

    def put(self, vae, key: str, mesh) -> None:
        store = self._store(vae)
        store[key] = mesh.copy()
        store.move_to_end(key)
        while len(store) > 1 and sum(_size(m) for m in store.values()) > self.max_bytes:
            store.popitem(last=False)


def _size(mesh) -> int:
    return np.asarray(mesh.vertices).nbytes + np.asarray(mesh.faces).nbytes
