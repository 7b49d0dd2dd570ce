"""Texture nodes: Align Scene To Image, Texture From Image, Render Views, Bake Views.

Thin adapters over ``midi_model.texturing``: meshes + masks (+ image) -> camera -> textured
meshes (core MESH with uvs + texture) -> Save MIDI Scene / any core MESH node.
"""
from __future__ import annotations

import numpy as np
import torch

from . import host
from .decode import core_to_meshes, meshes_to_core
from ..midi_model import inputs
from ..midi_model import texturing as tex
from ..midi_model.errors import MIDIInputError
from ..midi_model.texturing import multiview, views
from ..midi_model.texturing.photo import textured_object

CAMERA = "MIDI_CAMERA"


def _images(t) -> torch.Tensor:
    return t.detach().float().cpu()


def _objects(meshes, masks=None):
    items = core_to_meshes(meshes)
    if masks is not None and len(masks) != len(items):
        raise MIDIInputError(f"masks: {len(masks)} masks for {len(items)} meshes; give one mask per object, in "
                             "the same order (the masks the scene was made from)")
    return items


def _nonempty(items, what="meshes"):
    keep = [i for i, m in enumerate(items) if len(m.faces) > 0]
    if not keep:
        raise MIDIInputError(f"{what}: every object is empty; raise octree_depth or check the masks")
    return keep


def _to_image(arr) -> torch.Tensor:
    a = np.asarray(arr)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    t = torch.from_numpy(a)
    return (t[None] if t.ndim == 3 else t).to(host.intermediate_device())


class AlignSceneToImage:
    DESCRIPTION = ("Finds the photo's camera: a pinhole camera (focal, rotation, translation) that projects every "
                   "object onto its mask, fitted from several starting views on the CPU in seconds. The overlay "
                   "shows each object's projection tinted and its mask outlined in the same colour, with the IoU.")
    CATEGORY = "MIDI/texture"
    FUNCTION = "align"
    RETURN_TYPES = (CAMERA, "IMAGE", "STRING")
    RETURN_NAMES = ("camera", "overlay", "report")
    OUTPUT_TOOLTIPS = ("The fitted camera (intrinsics and world-to-camera; world = the meshes' frame).",
                       "Projected silhouettes (tinted) over the image, mask outlines on top: check the fit here.",
                       "Focal length and IoU per object.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "meshes": ("MESH", {"tooltip": "The scene's objects (Decode To Meshes), in mask order."}),
            "image": ("IMAGE", {"tooltip": "The scene image the objects were made from."}),
            "masks": ("MASK", {"tooltip": "One mask per object, the ones the scene was made from."}),
        }}

    def align(self, meshes, image, masks):
        rgb = inputs.as_rgb_uint8(image, "image")
        m = inputs.prepare_masks(masks, rgb.shape[:2], "masks")
        items = _objects(meshes, m)
        keep = _nonempty(items)
        V = [items[i].vertices for i in keep]
        F = [items[i].faces for i in keep]
        progress = host.Progress(3)
        fit = tex.fit_camera(V, F, m[keep], callback=lambda: host.check_interrupt())
        progress.set(2)
        iou = [float("nan")] * len(items)
        for j, i in enumerate(keep):
            iou[i] = fit.iou[j]
        overlay = tex.camera_overlay(rgb, fit.camera, V, F, m[keep], fit.iou)
        progress.set(3)
        report = f"focal {fit.camera.K[0, 0]:.1f} px; IoU per object: " + ", ".join(
            f"{i}: {x:.3f}" for i, x in enumerate(iou, 1))
        return (fit.camera, _to_image(overlay), report)


class TextureFromImage:
    DESCRIPTION = ("Colours every object from the photo through the fitted camera: UV unwrap (xatlas), each "
                   "visible texel takes the photo's colour (depth test across all objects, so occluded parts never "
                   "take an occluder's colour), unseen texels are filled from the nearest seen surface of the same "
                   "object. Output: MESH with uvs and a base-colour texture per object (Save MIDI Scene, SaveGLB).")
    CATEGORY = "MIDI/texture"
    FUNCTION = "texture"
    RETURN_TYPES = ("MESH",)
    RETURN_NAMES = ("textured_meshes",)
    OUTPUT_TOOLTIPS = ("One mesh per object with uvs and a base-colour texture (or vertex colours).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "meshes": ("MESH", {"tooltip": "The scene's objects, in mask order."}),
            "image": ("IMAGE", {"tooltip": "The scene image."}),
            "masks": ("MASK", {"tooltip": "One mask per object."}),
            "camera": (CAMERA, {"tooltip": "From Align Scene To Image."}),
            "texture_size": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 64,
                                     "tooltip": "Texture side per object in texels."}),
            "frame": (list(tex.FRAMES), {"default": "midi", "tooltip":
                      "midi: MIDI's scene frame, as the meshes came in. camera: the photo camera's frame "
                      "(camera at the origin, Y up, looking down -Z), so a viewer's default view matches the photo."}),
            "vertex_colors": ("BOOLEAN", {"default": False, "tooltip": "Vertex colours instead of a texture."}),
            "edge_margin": ("INT", {"default": 1, "min": 0, "max": 16, "tooltip":
                            "Pixels at each mask's edge not trusted for colour (segmentation edges mix colours)."}),
        }}

    def texture(self, meshes, image, masks, camera, texture_size=1024, frame="midi", vertex_colors=False,
                edge_margin=1):
        from ..midi_model.texturing.export import textured_mesh

        rgb = inputs.as_rgb_uint8(image, "image")
        m = inputs.prepare_masks(masks, rgb.shape[:2], "masks")
        items = _objects(meshes, m)
        keep = _nonempty(items)
        progress = host.Progress(len(keep))
        objs = tex.texture_from_image([items[i].vertices for i in keep], [items[i].faces for i in keep], rgb,
                                      m[keep], camera, int(texture_size), int(edge_margin),
                                      callback=lambda done, total: progress.set(done))
        transform = tex.frame_transform(frame, camera)
        out = list(items)
        photo = [None] * len(items)
        for j, i in enumerate(keep):
            out[i] = textured_mesh(objs[j], transform, bool(vertex_colors))
            photo[i] = objs[j].photo
        for i in range(len(items)):   # empty objects stay empty, with a blank texture so the batch stacks
            if i not in keep and not vertex_colors:
                out[i] = _blank(int(texture_size))
        mesh = meshes_to_core(out)
        mesh.midi_photo = photo       # which texels the photo saw: Bake Views keeps them
        return (mesh,)


def _blank(size: int):
    import trimesh
    from PIL import Image

    mat = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.new("RGB", (size, size), (128, 128, 128)))
    m = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    m.visual = trimesh.visual.TextureVisuals(uv=np.zeros((0, 2)), material=mat)
    return m


class RenderViews:
    DESCRIPTION = ("Renders one object's control views for a multi-view generator in the view set of the official "
                   "textured script (MV-Adapter): 6 orthographic views (front, right, back, left, top, bottom), "
                   "position and normal maps, plus the object's crop on grey as the reference image.")
    CATEGORY = "MIDI/texture"
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("position", "normal", "reference")
    OUTPUT_TOOLTIPS = ("6 position maps (p + 0.5 in MV-Adapter's frame).", "6 normal maps (n / 2 + 0.5).",
                       "The object's crop, longer side 90 % of the view, on grey (needs image and masks).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "meshes": ("MESH", {"tooltip": "The scene's objects; give Bake Views the same meshes."}),
            "object_index": ("INT", {"default": 0, "min": 0, "max": 255, "tooltip": "Which object (from 0)."}),
            "resolution": ("INT", {"default": views.RESOLUTION, "min": 64, "max": 2048, "step": 8,
                                   "tooltip": "View size (the official script: 768)."}),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "The scene image, for the reference crop."}),
            "masks": ("MASK", {"tooltip": "The object masks, for the reference crop."}),
        }}

    def render(self, meshes, object_index=0, resolution=views.RESOLUTION, image=None, masks=None):
        items = core_to_meshes(meshes)
        k = _index(object_index, items)
        _, pos, nrm, _ = views.render_control_views(items[k].vertices, items[k].faces, int(resolution))
        if image is not None and masks is not None:
            rgb = inputs.as_rgb_uint8(image, "image")
            m = inputs.prepare_masks(masks, rgb.shape[:2], "masks")
            _objects(meshes, m)
            ref = views.reference_view(rgb, m[k], int(resolution))
        else:
            ref = np.full((int(resolution), int(resolution), 3), 128, np.uint8)
        dev = host.intermediate_device()
        return (pos.to(dev), nrm.to(dev), _to_image(ref))


def _index(k, items) -> int:
    k = int(k)
    if not 0 <= k < len(items):
        raise MIDIInputError(f"object_index: {k}, but there are {len(items)} objects (0..{len(items) - 1})")
    if len(items[k].faces) == 0:
        raise MIDIInputError(f"object_index: object {k} is empty; pick another object")
    return k


class BakeViews:
    DESCRIPTION = ("Bakes 6 generated views of one object (same order as Render Views: front, right, back, left, "
                   "top, bottom) into its texture. Texels the photo saw keep the photo's colour; the rest take the "
                   "views' colours, weighted by how squarely each view sees the surface.")
    CATEGORY = "MIDI/texture"
    FUNCTION = "bake"
    RETURN_TYPES = ("MESH",)
    RETURN_NAMES = ("textured_meshes",)
    OUTPUT_TOOLTIPS = ("The meshes, this object's texture updated from the views.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "textured_meshes": ("MESH", {"tooltip": "From Texture From Image (the meshes Render Views got)."}),
            "views": ("IMAGE", {"tooltip": "6 generated views of the object (any square size)."}),
            "object_index": ("INT", {"default": 0, "min": 0, "max": 255, "tooltip": "Which object (from 0)."}),
        }}

    def bake(self, textured_meshes, views, object_index=0):
        items = core_to_meshes(textured_meshes)
        k = _index(object_index, items)
        imgs = _images(views)
        if imgs.ndim != 4 or imgs.shape[0] != len(tex_views()):
            raise MIDIInputError(f"views: {imgs.shape[0] if imgs.ndim == 4 else 1} images; give the "
                                 f"{len(tex_views())} views in Render Views' order (front, right, back, left, top, bottom)")
        mesh = items[k]
        if getattr(mesh.visual, "kind", None) != "texture":
            raise MIDIInputError("textured_meshes: the object has no texture; connect Texture From Image's output")
        photo = (getattr(textured_meshes, "midi_photo", None) or [None] * len(items))[k]
        image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
        uv = np.stack([mesh.visual.uv[:, 0], 1 - mesh.visual.uv[:, 1]], 1)
        obj = textured_object(mesh.vertices, mesh.faces, uv, image, photo)
        baked = multiview.bake_views(obj, [imgs[i].numpy() for i in range(imgs.shape[0])])
        from ..midi_model.texturing.export import textured_mesh

        items[k] = textured_mesh(baked)
        out = meshes_to_core(items)
        photos = list(getattr(textured_meshes, "midi_photo", None) or [None] * len(items))
        photos[k] = baked.photo
        out.midi_photo = photos
        return (out,)


def tex_views():
    return views.VIEW_NAMES
