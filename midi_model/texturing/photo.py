"""Texture every object of a scene from the photo it was made from (through the fitted camera)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MIDIInputError
from .bake import erode, project_texels, render_scene, texels
from .camera import Camera
from .fill import fill_unseen, pad_gutter
from .unwrap import Unwrapped, unwrap


@dataclass
class TexturedObject:
    mesh: Unwrapped          # world coordinates, seam vertices split, uvs in glTF convention
    texture: np.ndarray      # (T, T, 3) uint8 base colour
    seen: np.ndarray         # (T, T) bool: the texel's colour came from an image (photo or view)
    used: np.ndarray         # (T, T) bool: the texel lies on the atlas
    photo: np.ndarray = None  # (T, T) bool: the colour came from the photo (it wins over generated views)

    def __post_init__(self):
        if self.photo is None:
            self.photo = self.seen.copy()


def as_float_image(image) -> torch.Tensor:
    """uint8 or float (H, W, 3) -> float32 tensor in 0..1."""
    a = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    a = a[..., :3]
    return torch.from_numpy((a.astype(np.float32) / 255.0) if a.dtype == np.uint8 else a.astype(np.float32))


def texture_from_image(vertices: list, faces: list, image, masks: np.ndarray, camera: Camera,
                       texture_size: int = 1024, edge_margin: int = 1, callback=None) -> list[TexturedObject]:
    """One UV texture per object: visible texels from the photo (depth test across all objects),
    the rest filled from the nearest seen surface of the same object."""
    img = as_float_image(image)
    masks = np.asarray(masks).astype(bool)
    H, W = img.shape[:2]
    if masks.shape[1:] != (H, W):
        raise MIDIInputError(f"masks: size {masks.shape[2]}x{masks.shape[1]} differs from the image "
                             f"{W}x{H}; give masks of the image's size")
    if len(masks) != len(vertices):
        raise MIDIInputError(f"masks: {len(masks)} masks for {len(vertices)} objects; give one mask per object")
    if (camera.width, camera.height) != (W, H):
        camera = camera.scaled(W, H)
    raster = render_scene(camera, vertices, faces)
    out = []
    for i, (v, f) in enumerate(zip(vertices, faces)):
        u = unwrap(v, f, texture_size)
        tx = texels(u, texture_size)
        m = torch.from_numpy(erode(masks[i], edge_margin))
        colour, seen, _ = project_texels(tx, i, camera, raster, img, mask=m)
        fallback = img[torch.from_numpy(masks[i])].mean(0) if masks[i].any() else torch.full((3,), 0.5)
        colour = fill_unseen(colour, seen, tx.used, tx.position, fallback)
        colour = pad_gutter(colour, tx.used)
        out.append(TexturedObject(u, to_uint8(colour), seen.numpy(), tx.used.numpy()))
        if callback is not None:
            callback(i + 1, len(vertices))
    return out


def to_uint8(colour: torch.Tensor) -> np.ndarray:
    return (colour.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def vertex_colours(obj: TexturedObject) -> np.ndarray:
    """(V', 4) uint8: the texture sampled at each vertex's uv."""
    T = obj.texture.shape[0]
    uv = obj.mesh.uvs * T
    x = np.clip(np.floor(uv[:, 0]).astype(int), 0, T - 1)
    y = np.clip(np.floor(uv[:, 1]).astype(int), 0, T - 1)
    rgb = obj.texture[y, x]
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)


def textured_object(vertices, faces, uvs, texture, photo=None) -> TexturedObject:
    """Rebuild a TexturedObject from plain arrays (e.g. a MESH item with uvs and a texture).

    ``photo`` (T, T) marks texels whose colour came from the photo; without it none is protected."""
    from .bake import texels

    tex = np.asarray(texture)
    if tex.dtype != np.uint8:
        tex = (np.clip(tex, 0, 1) * 255 + 0.5).astype(np.uint8)
    tex = np.ascontiguousarray(tex[..., :3])
    if tex.shape[0] != tex.shape[1]:
        raise MIDIInputError(f"texture: {tex.shape[1]}x{tex.shape[0]} is not square; textures from "
                             "Texture From Image are square")
    v = np.asarray(vertices, np.float64)
    u = Unwrapped(v, np.asarray(faces, np.int64), np.asarray(uvs, np.float64), np.arange(len(v)))
    used = texels(u, tex.shape[0]).used.numpy()
    photo = np.zeros(used.shape, bool) if photo is None else np.asarray(photo, bool)
    return TexturedObject(u, tex, photo.copy(), used, photo)
