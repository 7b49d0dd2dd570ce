"""Figures for docs/texture.md and the README: camera overlay and textured scenes seen from a new view.

    PYTHONPATH=. python docs/make_texture_figure.py synthetic OUT.png
        the synthetic scene (midi_model.texturing.synthetic): picture | camera fitted from the masks
        (overlay) | the textured scene from another viewpoint (texture baked from the picture)
    PYTHONPATH=. python docs/make_texture_figure.py glb PICTURE.png OVERLAY.png TEXTURED.glb CAMERA.json OUT.png
        the same three panels for a `texture` / `generate --texture` run
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from midi_model.scene import load_scene_meshes
from midi_model.texturing import Camera, camera_overlay, fit_camera, texture_from_image
from midi_model.texturing.camera import intrinsics, look_at
from midi_model.texturing.raster import rasterize


def render_textured(meshes_uv_tex, cam: Camera, background=(40, 40, 46)) -> np.ndarray:
    """[(vertices, faces, uvs (glTF), texture uint8)] -> picture through ``cam``, lit a little for shape."""
    V = [m[0] for m in meshes_uv_tex]
    F = [m[1] for m in meshes_uv_tex]
    r = rasterize(V, F, cam.K, cam.world_to_camera, cam.height, cam.width)
    img = np.empty((cam.height, cam.width, 3), np.float32)
    img[:] = np.asarray(background, np.float32) / 255
    light = np.array([-0.3, -0.5, -0.8])      # camera axes: towards the camera, up and to the left
    light /= np.linalg.norm(light)
    for i, (v, f, uv, tex) in enumerate(meshes_uv_tex):
        sel = (r.obj == i).numpy()
        if not sel.any():
            continue
        local = r.local_face().numpy()[sel]
        b = r.bary.numpy()[sel]
        t = (np.asarray(uv)[np.asarray(f)[local]] * b[..., None]).sum(1)
        T = tex.shape[0]
        x = np.clip((t[:, 0] * T).astype(int), 0, T - 1)
        y = np.clip((t[:, 1] * T).astype(int), 0, T - 1)
        shade = 0.6 + 0.4 * np.clip(r.normal.numpy()[sel] @ light, 0, 1)
        img[sel] = tex[y, x].astype(np.float32) / 255 * shade[:, None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def novel_camera(meshes, cam: Camera, turn_deg: float = 35.0) -> Camera:
    """The photo camera orbited by ``turn_deg`` around the scene's vertical axis through its centre."""
    centre = np.concatenate([np.asarray(m) for m in meshes]).mean(0)
    eye = cam.center - centre
    a = np.radians(turn_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return Camera(cam.K, look_at(centre + rot @ eye, centre), cam.width, cam.height)


def panels(images, titles) -> Image.Image:
    h = max(i.shape[0] for i in images)
    out = Image.new("RGB", (sum(i.shape[1] for i in images) + 8 * (len(images) - 1), h + 24), (255, 255, 255))
    x = 0
    d = ImageDraw.Draw(out)
    for img, title in zip(images, titles):
        out.paste(Image.fromarray(img), (x, 24))
        d.text((x + 4, 5), title, fill=(0, 0, 0))
        x += img.shape[1] + 8
    return out


def synthetic(out_path):
    from midi_model.texturing.synthetic import make_scene

    sc = make_scene(320, 240)
    V = [m.vertices for m in sc.meshes]
    F = [m.faces for m in sc.meshes]
    fit = fit_camera(V, F, sc.masks)
    objs = texture_from_image(V, F, sc.image, sc.masks, fit.camera, 512)
    over = camera_overlay(sc.image, fit.camera, V, F, sc.masks, fit.iou)
    cam = novel_camera(V, fit.camera, 60.0)
    view = render_textured([(o.mesh.vertices, o.mesh.faces, o.mesh.uvs, o.texture) for o in objs], cam)
    panels([sc.image, over, view], ["picture (and its masks)", "camera fitted to the masks",
                                    "textured scene, turned 60 degrees"]).save(out_path)


def from_glb(picture, overlay, glb, camera_json, out_path):
    import trimesh

    cam = Camera.from_dict(json.loads(open(camera_json).read()))
    names, _ = load_scene_meshes(glb)
    scene = trimesh.load(glb, force="scene")
    items = []
    for n in names:
        g = scene.geometry[scene.graph[n][1]]
        uv = np.stack([g.visual.uv[:, 0], 1 - g.visual.uv[:, 1]], 1)
        items.append((g.vertices, g.faces, uv, np.asarray(g.visual.material.baseColorTexture.convert("RGB"))))
    pic = np.asarray(Image.open(picture).convert("RGB").resize((cam.width, cam.height)))
    over = np.asarray(Image.open(overlay).convert("RGB"))
    view = render_textured(items, novel_camera([i[0] for i in items], cam, 35.0))
    panels([pic, over, view], ["picture", "camera fitted to the masks", "textured scene, turned 35 degrees"]).save(out_path)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "synthetic":
        synthetic(sys.argv[2])
    else:
        from_glb(*sys.argv[2:7])
