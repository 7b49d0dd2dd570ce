"""DecodeToMeshes: MIDI_LATENTS -> core MESH batch, one item per object."""
from __future__ import annotations

import numpy as np
import torch

from . import host
from ..midi_model import memory, meshing
from ..midi_model.mesh_cache import MeshCache
from ..midi_model.vae import DECODE_CHUNK
from ..midi_model.errors import MIDIInputError


# Meshes of recently decoded objects (512 MB at most): a re-roll's kept objects (bit-identical latents)
# are not decoded again.
DECODED = MeshCache()


def reusable_objects(latents, n: int) -> list[bool]:
    """Latents from MIDI Sampler / Re-roll (they carry a recording) may take meshes from DECODED:
    a re-roll's kept objects have bit-identical latents, whichever of the two decodes runs first."""
    rec = latents.get("recording") if isinstance(latents, dict) else None
    return [rec is not None] * n


def decoder_choices() -> list[str]:
    """The library's decoders, official progressive first."""
    return list(meshing.DECODERS)


def meshes_to_core(meshes):
    """list of trimesh -> core MESH: a variable-size batch (B = objects), zero-padded faces,
    padded vertices repeat the item's first vertex, real sizes in vertex_counts / face_counts.
    Textured meshes (uv + base-colour image, all the same size) also fill ``uvs`` / ``texture``;
    meshes with vertex colours fill ``vertex_colors``."""
    dev = host.intermediate_device()
    b = len(meshes)
    nv = [len(m.vertices) for m in meshes]
    nf = [len(m.faces) for m in meshes]
    vmax, fmax = max(nv + [1]), max(nf + [1])
    verts = torch.zeros((b, vmax, 3), dtype=torch.float32)
    faces = torch.zeros((b, fmax, 3), dtype=torch.int64)
    for i, m in enumerate(meshes):
        if nv[i]:
            v = torch.from_numpy(np.asarray(m.vertices, np.float32))
            verts[i, :nv[i]] = v
            verts[i, nv[i]:] = v[0]
        if nf[i]:
            faces[i, :nf[i]] = torch.from_numpy(np.asarray(m.faces, np.int64))
    uvs = texture = colors = None
    images = [_texture_image(m) for m in meshes]
    if b and all(im is not None for im in images) and len({im.shape for im in images}) == 1:
        uvs = torch.zeros((b, vmax, 2), dtype=torch.float32)
        for i, m in enumerate(meshes):  # trimesh keeps v up; the core MESH has glTF's v down
            uv = np.asarray(m.visual.uv, np.float32)
            uvs[i, :nv[i]] = torch.from_numpy(np.stack([uv[:, 0], 1 - uv[:, 1]], 1))
        texture = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0).to(dev)
        uvs = uvs.to(dev)
    elif b and all(getattr(m.visual, "kind", None) == "vertex" for m in meshes):
        colors = torch.zeros((b, vmax, 4), dtype=torch.float32)
        for i, m in enumerate(meshes):
            colors[i, :nv[i]] = torch.from_numpy(np.asarray(m.visual.vertex_colors, np.float32) / 255.0)
        colors = colors.to(dev)
    return host.make_mesh(verts.to(dev), faces.to(dev),
                          torch.tensor(nv, dtype=torch.int64, device=dev), torch.tensor(nf, dtype=torch.int64, device=dev),
                          uvs=uvs, texture=texture, vertex_colors=colors)


def _texture_image(mesh):
    """(H, W, 3) uint8 base colour of a trimesh with uvs, or None."""
    visual = getattr(mesh, "visual", None)
    if getattr(visual, "kind", None) != "texture" or getattr(visual, "uv", None) is None:
        return None
    mat = visual.material
    img = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
    return None if img is None else np.asarray(img.convert("RGB"))


def core_to_meshes(mesh):
    """core MESH (any host version, with or without counts) -> list of trimesh, one per item;
    ``uvs`` + ``texture`` become a base-colour texture, ``vertex_colors`` vertex colours."""
    import trimesh
    from PIL import Image

    v = getattr(mesh, "vertices", None)
    f = getattr(mesh, "faces", None)
    if v is None or f is None:
        raise MIDIInputError(f"mesh: expected a MESH (vertices + faces), got {type(mesh).__name__}")
    v = torch.as_tensor(v)
    f = torch.as_tensor(f)
    uvs, tex, col = (getattr(mesh, k, None) for k in ("uvs", "texture", "vertex_colors"))
    if v.ndim == 2:
        v, f = v[None], f[None]
        uvs = uvs[None] if uvs is not None and uvs.ndim == 2 else uvs
        tex = tex[None] if tex is not None and tex.ndim == 3 else tex
        col = col[None] if col is not None and col.ndim == 2 else col
    vc = getattr(mesh, "vertex_counts", None)
    fc = getattr(mesh, "face_counts", None)
    out = []
    for i in range(v.shape[0]):
        n = int(vc[i]) if vc is not None else v.shape[1]
        m = int(fc[i]) if fc is not None else f.shape[1]
        tm = trimesh.Trimesh(v[i, :n].detach().float().cpu().numpy(),
                             f[i, :m].detach().cpu().numpy().astype(np.int64), process=False)
        if uvs is not None and tex is not None:
            uv = uvs[i, :n].detach().float().cpu().numpy()
            img = (tex[min(i, tex.shape[0] - 1), ..., :3].detach().float().cpu().clamp(0, 1) * 255 + 0.5)
            material = trimesh.visual.material.PBRMaterial(
                baseColorTexture=Image.fromarray(img.to(torch.uint8).numpy()), metallicFactor=0.0, roughnessFactor=1.0)
            tm.visual = trimesh.visual.TextureVisuals(uv=np.stack([uv[:, 0], 1 - uv[:, 1]], 1), material=material)
        elif col is not None:
            c = col[i, :n].detach().float().cpu().clamp(0, 1).numpy()
            if c.shape[1] == 3:
                c = np.concatenate([c, np.ones((len(c), 1), c.dtype)], 1)
            tm.visual = trimesh.visual.ColorVisuals(tm, vertex_colors=(c * 255 + 0.5).astype(np.uint8))
        out.append(tm)
    return out


class DecodeToMeshes:
    DESCRIPTION = ("Turns the latents into one mesh per object: the shape VAE is queried on an octree grid, "
                   "then marching cubes. All objects share the scene's coordinate frame. Progress and Cancel per "
                   "chunk of grid queries; out of GPU memory, it starts again with smaller chunks. Objects whose latents "
                   "were decoded before with the same settings (kept objects of a re-roll) reuse their meshes.")
    CATEGORY = "MIDI"
    FUNCTION = "decode"
    RETURN_TYPES = ("MESH",)
    RETURN_NAMES = ("meshes",)
    OUTPUT_TOOLTIPS = ("Core MESH batch, one item per object (variable size on ComfyUI >= 0.27). Works with Save "
                       "MIDI Scene and core SaveGLB (one file per object).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "midi_model": ("MIDI_MODEL", {"tooltip": "From Load MIDI Model (its VAE decodes)."}),
            "latents": ("MIDI_LATENTS", {"tooltip": "From MIDI Sampler."}),
            "octree_depth": ("INT", {"default": 8, "min": 4, "max": 10, "tooltip":
                                     "Grid resolution 2^depth + 1 per side. 8 = official 257^3; 7 is 8x faster and "
                                     "coarser; 9 is finer and 8x slower."}),
            "decoder": (decoder_choices(), {"default": meshing.DEFAULT_DECODER, "tooltip":
                        "progressive (official): decode the scene box, then again inside each object's box. dense: "
                        "one pass over the scene box. *hierarchical: the same meshes, coarse-to-fine, querying only "
                        "near the surface (much faster at depth 8+)."}),
            "smoothing": ("BOOLEAN", {"default": True, "tooltip": "Official 3x3x3 smoothing of the field before "
                                                                  "marching cubes (removes stair steps)."}),
            "remove_floaters": ("BOOLEAN", {"default": False, "tooltip":
                                            "Drop small disconnected pieces (fewer than 5% of the faces of the "
                                            "object's largest piece)."}),
            "max_faces": ("INT", {"default": 0, "min": 0, "max": 10_000_000, "step": 1000, "tooltip":
                                  "Face budget per object (0 = keep all). Larger meshes are simplified."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def decode(self, midi_model, latents, octree_depth=8, decoder=meshing.DEFAULT_DECODER, smoothing=True,
               remove_floaters=False, max_faces=0, unique_id=None):
        lat = latents["samples"] if isinstance(latents, dict) else latents
        if not isinstance(lat, torch.Tensor) or lat.ndim != 3:
            raise MIDIInputError("latents: expected MIDI_LATENTS from MIDI Sampler")
        need = memory.decode_bytes(midi_model.pipe, lat.shape[0], DECODE_CHUNK, decoder)
        pipe = midi_model.prepare("decode", need)
        bar = host.Progress(1, node_id=unique_id)
        with torch.inference_mode():
            meshes, reused = pipe.decode_reusing(lat, DECODED, octree_depth=int(octree_depth), decoder=decoder,
                                                 smoothing=bool(smoothing), callback=bar.callback(),
                                                 reusable=reusable_objects(latents, lat.shape[0]))
        if reused:
            host.log.info("MIDI: reused the meshes of %d object(s) decoded before (kept objects)", reused)
        if remove_floaters or max_faces:
            from ..midi_model.postprocess import postprocess  # trimesh/scipy: imported when used

            meshes = postprocess(meshes, remove_small=bool(remove_floaters), max_faces=int(max_faces))
        empty = [i for i, m in enumerate(meshes) if len(m.faces) == 0]
        if empty:
            host.log.warning("MIDI: object(s) %s have no surface at this resolution (empty mesh)", empty)
        return (meshes_to_core(meshes),)
