"""Texturing: rasteriser vs trimesh ray casting, camera from masks, photo bake, occlusion, GLB round trip.

The synthetic scene (midi_model.texturing.synthetic) has a known camera and a known colour at every
surface point, so baked texels are checked against exact values."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from midi_model.__main__ import main
from midi_model.inputs import masks_to_label_map
from midi_model.scene import export_glb, load_scene_meshes
from midi_model.texturing import fit_camera, texture_from_image
from midi_model.texturing.bake import texels
from midi_model.texturing.camera import Camera, intrinsics, look_at
from midi_model.texturing.raster import rasterize
from midi_model.texturing.synthetic import PALETTE, make_scene, primitives, surface_colour

TEX = 256


def _raycast(meshes, cam: Camera):
    """Independent reference: trimesh ray casting through every pixel centre -> (object id, hit point)."""
    H, W = cam.height, cam.width
    both = trimesh.util.concatenate(meshes)
    owner = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(meshes)])
    v, u = np.mgrid[0:H, 0:W] + 0.5
    d = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u)], -1)
    d = d.reshape(-1, 3) @ cam.R                      # camera -> world directions
    o = np.repeat(cam.center[None], len(d), 0)
    locs, ray, tri = both.ray.intersects_location(o, d, multiple_hits=False)
    obj = np.full(H * W, -1)
    obj[ray] = owner[tri]
    pts = np.zeros((H * W, 3))
    pts[ray] = locs
    return obj.reshape(H, W), pts.reshape(H, W, 3), tri, ray


@pytest.fixture(scope="module")
def scene():
    return make_scene()


@pytest.fixture(scope="module")
def fitted(scene):
    return fit_camera([m.vertices for m in scene.meshes], [m.faces for m in scene.meshes], scene.masks)


def test_rasteriser_matches_trimesh_ray_casting():
    meshes = primitives(detail=2)
    cam = Camera(intrinsics(150.0, 128, 96), look_at((1.3, 1.0, 2.4)), 128, 96)
    r = rasterize([m.vertices for m in meshes], [m.faces for m in meshes], cam.K, cam.world_to_camera, 96, 128)
    obj, pts, tri, ray = _raycast(meshes, cam)
    assert (r.obj.numpy() == obj).mean() > 0.995          # only pixel centres grazing an edge may differ
    both = (r.obj.numpy() >= 0) & (obj >= 0)
    depth_ref = cam.to_camera_points(pts[both])[:, 2]
    assert np.abs(r.depth.numpy()[both] - depth_ref).max() < 1e-4
    # the surface point from face id + barycentrics is the ray's hit point
    V = torch.cat([torch.tensor(m.vertices, dtype=torch.float32) for m in meshes])
    offs = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    F = torch.cat([torch.tensor(m.faces) + int(o) for m, o in zip(meshes, offs)])
    hit = r.interpolate(V, F).numpy()
    assert np.abs(hit[both] - pts[both]).max() < 1e-4
    # normals: the face normal in camera axes, as trimesh has it in world axes
    face_n = np.concatenate([m.face_normals for m in meshes])
    ours = r.normal.numpy()[r.mask.numpy()] @ cam.R        # camera -> world
    assert np.abs(ours - face_n[r.face.numpy()[r.mask.numpy()]]).max() < 1e-4
    assert np.isinf(r.depth.numpy()[~r.mask.numpy()]).all() and (r.face.numpy()[~r.mask.numpy()] == -1).all()


def test_camera_from_masks(scene, fitted):
    assert len(fitted.iou) == 3
    assert min(fitted.iou) >= 0.95, fitted.iou
    # the start views are orbit views, none equal to the true one: the fit moved the camera
    assert abs(fitted.camera.K[0, 0] - scene.camera.K[0, 0]) / scene.camera.K[0, 0] < 0.15
    assert np.linalg.norm(fitted.camera.center - scene.camera.center) < 0.3


def _interior(scene, cam, pos, obj, margin=2):
    """Seen texels whose projection lies at least ``margin`` pixels inside the object's mask."""
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(scene.masks[obj], iterations=margin)
    pc = cam.to_camera_points(pos)
    uv = pc[:, :2] / pc[:, 2:3] * np.diag(cam.K)[:2] + cam.K[:2, 2]
    x = np.clip(uv[:, 0].astype(int), 0, cam.width - 1)
    y = np.clip(uv[:, 1].astype(int), 0, cam.height - 1)
    return inner[y, x]


@pytest.mark.parametrize("which", ["true", "fitted"])
def test_baked_colours_match_the_picture(scene, fitted, which):
    """The photo is rendered by trimesh ray casting (independent of our rasteriser); every seen texel
    away from the silhouette edges carries the exact surface colour."""
    cam = scene.camera if which == "true" else fitted.camera
    obj, pts, _, _ = _raycast(scene.meshes, scene.camera)
    photo = np.full((scene.camera.height, scene.camera.width, 3), 0.5)
    for i in range(3):
        photo[obj == i] = surface_colour(pts[obj == i], i)
    photo = (photo * 255 + 0.5).astype(np.uint8)
    masks = np.stack([obj == i for i in range(3)])
    objs = texture_from_image([m.vertices for m in scene.meshes], [m.faces for m in scene.meshes], photo, masks,
                              cam, TEX)
    for i, o in enumerate(objs):
        tx = texels(o.mesh, TEX)
        pos = tx.position.numpy()[o.seen]
        inner = _interior(scene, scene.camera, pos, i)
        assert inner.sum() > 1000
        err = np.abs(o.texture[o.seen][inner].astype(np.float64) - surface_colour(pos[inner], i) * 255).mean()
        assert err <= 3.0, (i, err)


def test_occluded_surfaces_never_take_the_occluders_colour(scene, fitted):
    objs = texture_from_image([m.vertices for m in scene.meshes], [m.faces for m in scene.meshes], scene.image,
                              scene.masks, fitted.camera, TEX)
    cam = scene.camera
    occluded_total = 0
    for i, o in enumerate(objs):
        tx = texels(o.mesh, TEX)
        used = o.used
        rgb = o.texture[used].astype(np.float64) / 255
        # every texel (seen or filled) belongs to its own colour family
        family = np.argmin(((rgb[:, None] - PALETTE[None]) ** 2).sum(-1), 1)
        assert (family == i).all(), (i, np.bincount(family, minlength=3))
        # texels facing the camera whose pixel shows ANOTHER object were not taken from the photo
        pos, n = tx.position.numpy()[used], tx.normal.numpy()[used]
        pc = cam.to_camera_points(pos)
        uv = pc[:, :2] / pc[:, 2:3] * np.diag(cam.K)[:2] + cam.K[:2, 2]
        x, y = uv[:, 0].astype(int), uv[:, 1].astype(int)
        inside = (x >= 0) & (x < cam.width) & (y >= 0) & (y < cam.height)
        facing = ((n @ cam.R.T) * pc).sum(1) < 0
        other = np.zeros(len(pos), bool)
        for j in range(3):
            if j != i:
                other[inside] |= scene.masks[j][y[inside], x[inside]]
        occluded = facing & inside & other
        occluded_total += occluded.sum()
        assert not o.seen[used][occluded].any()
    assert occluded_total > 500    # the scene really has occlusion


@pytest.fixture(scope="module")
def files(scene, tmp_path_factory):
    d = tmp_path_factory.mktemp("texture")
    Image.fromarray(scene.image).save(d / "rgb.png")
    Image.fromarray(masks_to_label_map(scene.masks) * 60).save(d / "seg.png")
    export_glb(scene.meshes, d / "scene.glb", names=["box", "ball", "can"])
    (d / "true_camera.json").write_text(scene.camera.dumps())
    return d


def _sample(mesh):
    """Texture colour at each vertex's uv, as a glTF viewer reads it (uv from the file)."""
    img = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    T = img.shape[0]
    uv = mesh.visual.uv                       # trimesh: v up
    x = np.clip((uv[:, 0] * T).astype(int), 0, T - 1)
    y = np.clip(((1 - uv[:, 1]) * T).astype(int), 0, T - 1)
    return img[y, x]


def test_cli_texture_round_trip(files, scene):
    out = files / "textured.glb"
    argv = ["texture", "--scene", str(files / "scene.glb"), "--image", str(files / "rgb.png"),
            "--seg", str(files / "seg.png"), "--out", str(out), "--camera", str(files / "true_camera.json"),
            "--camera-out", str(files / "camera.json"), "--overlay-out", str(files / "overlay.png"),
            "--texture-size", str(TEX)]
    assert main(argv) == 0
    loaded = trimesh.load(out, force="scene")
    names, _ = load_scene_meshes(out)
    assert names == ["box", "ball", "can"]
    for i, name in enumerate(names):
        mesh = loaded.geometry[name]
        assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
        # the file's vertices are the scene's surface (seam vertices duplicated), in MIDI's frame
        assert np.abs(trimesh.proximity.signed_distance(scene.meshes[i], mesh.vertices[:200])).max() < 1e-4
        # texture read through the file's uvs at vertices the photo saw = the surface's true colour
        col = _sample(mesh).astype(np.float64)
        truth = surface_colour(mesh.vertices, i) * 255
        family = np.argmin(((col[:, None] / 255 - PALETTE[None]) ** 2).sum(-1), 1)
        assert (family == i).all()
        assert np.median(np.abs(col - truth).mean(1)) < 6.0
    cam = json.loads((files / "camera.json").read_text())
    assert set(cam) == {"width", "height", "K", "world_to_camera"}
    assert (cam["width"], cam["height"]) == (scene.camera.width, scene.camera.height)
    np.testing.assert_allclose(cam["K"], scene.camera.K)
    np.testing.assert_allclose(cam["world_to_camera"], scene.camera.world_to_camera)
    assert Image.open(files / "overlay.png").size == (scene.camera.width, scene.camera.height)
    # never overwritten
    before = out.read_bytes()
    assert main(argv) == 2
    assert out.read_bytes() == before


def test_cli_camera_frame_and_vertex_colours(files, scene):
    out = files / "camera_frame.glb"
    masks = []
    for i in range(3):
        p = files / f"m{i}.png"
        Image.fromarray((scene.masks[i] * 255).astype(np.uint8)).save(p)
        masks.append(str(p))
    assert main(["texture", "--scene", str(files / "scene.glb"), "--image", str(files / "rgb.png"),
                 "--masks", *masks, "--out", str(out), "--camera", str(files / "true_camera.json"),
                 "--texture-size", "64", "--frame", "camera", "--vertex-colors"]) == 0
    loaded = trimesh.load(out, force="scene")
    for i, m in enumerate(load_scene_meshes(out)[1]):
        # camera frame: OpenGL axes, everything in front of the camera is at negative z
        assert (m.vertices[:, 2] < 0).all()
        back = scene.camera.to_world_points(m.vertices * np.array([1, -1, -1]))
        assert np.abs(trimesh.proximity.signed_distance(scene.meshes[i], back[:100])).max() < 1e-4
        geom = list(loaded.geometry.values())[i]
        assert geom.visual.kind == "vertex"


def test_cli_bad_inputs(files, tmp_path, capsys):
    common = ["texture", "--scene", str(files / "scene.glb"), "--image", str(files / "rgb.png")]
    one = tmp_path / "one.png"
    Image.fromarray(np.full((240, 320), 255, np.uint8)).save(one)
    assert main(common + ["--masks", str(one), "--out", str(tmp_path / "a.glb")]) == 2
    assert "1 masks for 3 objects" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.fromarray(np.full((24, 32), 255, np.uint8)).save(small)
    assert main(common + ["--masks", str(small), str(small), str(small), "--out", str(tmp_path / "b.glb")]) == 2
    assert "but the image is 320x240" in capsys.readouterr().err
    (tmp_path / "x.glb").write_bytes(b"not a glb")
    assert main(["texture", "--scene", str(tmp_path / "x.glb"), "--image", str(files / "rgb.png"),
                 "--seg", str(files / "seg.png"), "--out", str(tmp_path / "c.glb")]) == 2
    assert "cannot read it as a GLB scene" in capsys.readouterr().err
    # checked before any work: an existing --camera-out
    (tmp_path / "cam.json").write_text("{}")
    assert main(common + ["--seg", str(files / "seg.png"), "--out", str(tmp_path / "d.glb"),
                          "--camera-out", str(tmp_path / "cam.json")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not any((tmp_path / f"{k}.glb").exists() for k in "abcd")


def test_generate_with_texture_on_the_golden_checkpoint(golden_model_dir, examples_dir, tmp_path):
    """generate --texture: the tiny random checkpoint gives blob-like meshes, so only the plumbing is
    checked here (the camera fit's accuracy is checked on the synthetic scene above)."""
    ex = examples_dir / "Realistic-Style"
    out = tmp_path / "scene.glb"
    argv = ["generate", "--model", str(golden_model_dir), "--image", str(ex / "01_rgb.png"),
            "--seg", str(ex / "01_seg.png"), "--out", str(out), "--size", "96", "--max-instances", "2",
            "--steps", "2", "--octree-depth", "4", "--decoder", "dense", "--device", "cpu", "--texture",
            "--texture-size", "64", "--camera-out", str(tmp_path / "camera.json")]
    assert main(argv) == 0
    names, meshes = load_scene_meshes(out)
    assert names == ["seg_29", "seg_76"]
    loaded = trimesh.load(out, force="scene")
    for name in names:
        tex = loaded.geometry[name].visual.material.baseColorTexture
        assert tex.size == (64, 64)
    cam = Camera.from_dict(json.loads((tmp_path / "camera.json").read_text()))
    assert (cam.width, cam.height) == (96, 96)
    assert np.isfinite(cam.K).all() and np.isfinite(cam.world_to_camera).all()


def test_multi_view_bake_from_known_views(scene):
    """Views rendered (orthographic, the official MV-Adapter view set) from the known colours, baked back:
    every texel, including those the photo never saw, carries the true colour."""
    from midi_model.texturing.multiview import bake_views
    from midi_model.texturing.views import render_control_views

    k = 1
    V, F = scene.meshes[k].vertices, scene.meshes[k].faces
    objs = texture_from_image([m.vertices for m in scene.meshes], [m.faces for m in scene.meshes], scene.image,
                              scene.masks, scene.camera, TEX)
    cams, pos, nrm, mask = render_control_views(V, F, 192)
    views = []
    for cam in cams:
        r = rasterize([V], [F], cam.K, cam.world_to_camera, 192, 192, ortho=True)
        p = r.interpolate(torch.tensor(V, dtype=torch.float32), torch.tensor(F)).numpy()
        img = np.full((192, 192, 3), 0.5)
        img[r.mask.numpy()] = surface_colour(p[r.mask.numpy()], k)
        views.append((img * 255 + 0.5).astype(np.uint8))
    baked = bake_views(objs[k], views)
    tx = texels(baked.mesh, TEX)
    used = baked.used
    truth = surface_colour(tx.position.numpy()[used], k) * 255
    err_before = np.abs(objs[k].texture[used].astype(np.float64) - truth).mean()
    err = np.abs(baked.texture[used].astype(np.float64) - truth).mean()
    assert baked.seen[used].mean() > 0.99 and objs[k].seen[used].mean() < 0.5
    assert err <= 3.0 and err < err_before / 3, (err, err_before)
    np.testing.assert_array_equal(baked.texture[objs[k].photo], objs[k].texture[objs[k].photo])
