"""Bake generated views (e.g. MV-Adapter's six) back into an object's UV texture; the photo wins."""
from __future__ import annotations

import numpy as np
import torch

from .bake import project_texels, texels
from .fill import fill_unseen, pad_gutter
from .photo import TexturedObject, as_float_image, to_uint8
from .raster import rasterize
from .views import view_cameras


def bake_views(obj: TexturedObject, views, cameras=None, power: float = 2.0, edge_margin: int = 2) -> TexturedObject:
    """views: (6, h, w, 3) images in the official view set of this object (any square size).

    Every texel a view sees takes the views' colours weighted by cos(angle to the view)^power;
    texels the photo saw keep the photo's colour; texels no image saw are filled again."""
    imgs = [as_float_image(v) for v in views]
    cams = cameras or view_cameras(_source_vertices(obj))
    if len(imgs) != len(cams):
        raise ValueError(f"views: {len(imgs)} images for {len(cams)} views; give the {len(cams)} views in order "
                         "front, right, back, left, top, bottom")
    T = obj.texture.shape[0]
    tx = texels(obj.mesh, T)
    acc = torch.zeros(T, T, 3)
    wsum = torch.zeros(T, T)
    for img, cam in zip(imgs, cams):
        h, w = img.shape[:2]
        cam = cam if (cam.width, cam.height) == (w, h) else cam.scaled(w, h)
        r = rasterize([obj.mesh.vertices], [obj.mesh.faces], cam.K, cam.world_to_camera, h, w, ortho=True)
        inner = _erode_torch(r.mask, edge_margin)     # generated views are least reliable at the outline
        colour, vis, cos = project_texels(tx, 0, cam, r, img, mask=inner)
        wt = cos.clamp_min(0) ** power * vis
        acc += colour * wt[..., None]
        wsum += wt
    photo = torch.from_numpy(obj.photo)
    current = torch.from_numpy(obj.texture.astype(np.float32) / 255)
    seen_views = wsum > 0
    colour = torch.where(seen_views[..., None], acc / wsum.clamp_min(1e-12)[..., None], current)
    colour = torch.where(photo[..., None], current, colour)
    seen = photo | seen_views
    used = torch.from_numpy(obj.used)
    colour = fill_unseen(colour, seen, used, tx.position, current[used].mean(0) if used.any() else [0.5] * 3)
    colour = pad_gutter(colour, used)
    return TexturedObject(obj.mesh, to_uint8(colour), seen.numpy(), obj.used, obj.photo)


def _source_vertices(obj: TexturedObject) -> np.ndarray:
    """The object's original vertices (seam copies removed), so the views' normalisation matches
    the one used when the control views were rendered from the untextured mesh."""
    _, first = np.unique(obj.mesh.source, return_index=True)
    return obj.mesh.vertices[first]


def _erode_torch(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    if pixels <= 0:
        return mask
    m = mask.float()[None, None]
    k = 2 * pixels + 1
    return (-torch.nn.functional.max_pool2d(-m, k, stride=1, padding=pixels))[0, 0] > 0.5
