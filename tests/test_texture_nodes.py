"""Texture nodes without ComfyUI: align -> texture -> Save MIDI Scene (textured GLB), render/bake views."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import trimesh

from nodes_fixtures import comfy_dirs  # noqa: F401  (fixture)

from comfyui_midi.midi_model.errors import MIDIInputError
from comfyui_midi.midi_model.scene import load_scene_meshes
from comfyui_midi.midi_model.texturing.raster import rasterize
from comfyui_midi.midi_model.texturing.synthetic import PALETTE, make_scene, surface_colour
from comfyui_midi.nodes import host
from comfyui_midi.nodes.decode import meshes_to_core
from comfyui_midi.nodes.scene import SaveMIDIScene
from comfyui_midi.nodes.texture import AlignSceneToImage, BakeViews, RenderViews, TextureFromImage

TEX = 128


@pytest.fixture(scope="module")
def scene():
    return make_scene()


@pytest.fixture(scope="module")
def comfy_inputs(scene):
    image = torch.from_numpy(scene.image.astype(np.float32) / 255)[None]
    masks = torch.from_numpy(scene.masks.astype(np.float32))
    return meshes_to_core(scene.meshes), image, masks


@pytest.fixture(scope="module")
def textured(scene, comfy_inputs):
    meshes, image, masks = comfy_inputs
    return TextureFromImage().texture(meshes, image, masks, scene.camera, texture_size=TEX)[0]


def test_align_scene_to_image(comfy_inputs, scene):
    meshes, image, masks = comfy_inputs
    with torch.inference_mode():   # as ComfyUI runs nodes
        camera, overlay, report = AlignSceneToImage().align(meshes, image, masks)
    assert overlay.shape == (1, scene.camera.height, scene.camera.width, 3)
    ious = [float(x.split(": ")[1]) for x in report.split("IoU per object: ")[1].split(", ")]
    assert len(ious) == 3 and min(ious) >= 0.95, report
    assert [x.split(": ")[0] for x in report.split("IoU per object: ")[1].split(", ")] == ["1", "2", "3"]  # from 1
    with pytest.raises(MIDIInputError, match="2 masks for 3 meshes"):
        AlignSceneToImage().align(meshes, image, masks[:2])


def test_texture_from_image_saves_a_textured_glb(textured, comfy_dirs):  # noqa: F811
    assert textured.uvs.shape[:2] == textured.vertices.shape[:2] and textured.uvs.shape[2] == 2
    assert tuple(textured.texture.shape) == (3, TEX, TEX, 3)
    out = SaveMIDIScene().save(textured, "tex/scene", names="box, ball, can")
    path = os.path.join(host.output_directory(), out["result"][0])
    names, _ = load_scene_meshes(path)
    assert names == ["box", "ball", "can"]
    loaded = trimesh.load(path, force="scene")
    for i, name in enumerate(names):
        mesh = loaded.geometry[name]
        img = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")).astype(np.float64) / 255
        used = img.reshape(-1, 3)
        family = np.argmin(((used[:, None] - PALETTE[None]) ** 2).sum(-1), 1)
        assert (np.bincount(family, minlength=3)[i] / len(family)) > 0.95   # gutter + texels, own colours


def test_render_views_conventions(scene, comfy_inputs):
    meshes, image, masks = comfy_inputs
    pos, nrm, ref = RenderViews().render(meshes, object_index=1, resolution=96, image=image, masks=masks)
    assert pos.shape == (6, 96, 96, 3) and nrm.shape == (6, 96, 96, 3) and ref.shape == (1, 96, 96, 3)
    bg = (pos == 0.5).all(-1)
    assert bg[:, 0, 0].all() and (~bg).sum() > 6 * 1000
    # front view (camera on +Z of the mesh, MV-Adapter frame Z up): the sphere's centre faces the camera,
    # normal (0, -1, 0) in that frame -> (0.5, 0, 0.5)
    c = nrm[0, 48, 48].numpy()
    assert np.allclose(c, [0.5, 0.0, 0.5], atol=0.05)
    # the top row of the front view's object is its top (+Z in MV-Adapter's frame = +Y of the mesh)
    rows = torch.nonzero(~bg[0])[:, 0]
    top = pos[0, rows.min()].numpy()
    assert top[(top != 0.5).any(-1)][:, 2].mean() > 0.9


def test_bake_views_photo_wins(scene, comfy_inputs, textured):
    meshes, image, masks = comfy_inputs
    from comfyui_midi.midi_model.texturing.views import view_cameras

    from comfyui_midi.nodes.decode import core_to_meshes
    k = 1
    mesh = core_to_meshes(textured)[k]
    # "generated" views: the object's exact colours, except a wrong colour shift where the photo saw it
    views = []
    for cam in view_cameras(mesh.vertices, 128):
        r = rasterize([mesh.vertices], [mesh.faces], cam.K, cam.world_to_camera, 128, 128, ortho=True)
        p = r.interpolate(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces)).numpy()
        img = np.full((128, 128, 3), 0.5)
        m = r.mask.numpy()
        img[m] = surface_colour(p[m], k)
        views.append(img)
    views = torch.tensor(np.stack(views), dtype=torch.float32)
    out = BakeViews().bake(textured, views, object_index=k)[0]
    before = textured.texture[k].numpy()
    after = out.texture[k].numpy()
    photo = textured.midi_photo[k]
    assert photo.sum() > 500
    np.testing.assert_array_equal(after[photo], before[photo])        # the photo wins where it saw
    assert not np.array_equal(after[~photo], before[~photo])          # elsewhere the views changed it
    with pytest.raises(MIDIInputError, match="give the 6 views"):
        BakeViews().bake(textured, views[:5], object_index=k)
    with pytest.raises(MIDIInputError, match="object_index: 7"):
        BakeViews().bake(textured, views, object_index=7)
