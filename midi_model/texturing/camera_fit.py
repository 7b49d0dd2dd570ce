"""Recover the photo's pinhole camera from the instance masks.

Each object's surface points, projected, should (a) fall inside its own mask or behind another
object's mask (occlusion), and (b) cover every pixel of its own mask. Both terms are 2D distances:
(a) through the distance transform of the allowed region, (b) as the nearest projected point for
sampled mask pixels. The camera (log focal, axis-angle rotation, translation) is fitted by Adam
from several starting views at once (one batch), the best start is refined, and the result is
scored by rasterising every object with a depth test and comparing with the masks (IoU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MIDIInputError
from .camera import Camera, intrinsics, look_at
from .raster import rasterize


@dataclass
class CameraFit:
    camera: Camera
    iou: list            # per object: |rendered visible ∩ mask| / |rendered visible ∪ mask|
    loss: float
    starts: int


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Area-weighted points on a mesh (deterministic)."""
    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    if len(f) == 0:
        return v[:count] if len(v) else np.zeros((0, 3))
    tri = v[f]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    p = area / area.sum() if area.sum() > 0 else None
    idx = rng.choice(len(f), size=count, p=p)
    r = rng.random((count, 2))
    s = np.sqrt(r[:, 0])
    b = np.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], 1)
    return (tri[idx] * b[:, :, None]).sum(1)


def _rodrigues(w: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> rotation (..., 3, 3), smooth at 0."""
    th2 = (w * w).sum(-1, keepdim=True)[..., None]
    th = torch.sqrt(th2 + 1e-12)
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*w.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(Kx)
    a = torch.where(th2 < 1e-8, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(th2 < 1e-8, 0.5 - th2 / 24, (1 - torch.cos(th)) / (th2 + 1e-12))
    return eye + a * Kx + b * (Kx @ Kx)


def _start_rotations(elevations, azimuths) -> list:
    """Orbit views around MIDI's up axis (+Y), looking at the origin."""
    out = []
    for el in elevations:
        for az in azimuths:
            e, a = math.radians(el), math.radians(az)
            eye = (math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a))
            out.append(look_at(eye)[:3, :3])
    return out


def _downsample(masks: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    n, H, W = masks.shape
    s = min(1.0, max_side / max(H, W))
    if s == 1.0:
        return masks, 1.0
    h, w = max(1, round(H * s)), max(1, round(W * s))
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    small = torch.nn.functional.interpolate(t, size=(h, w), mode="area")[:, 0].numpy() >= 0.5
    return small, w / W


class _Objective:
    """The 2D silhouette distances at one working resolution, for a batch of cameras."""

    def __init__(self, points: torch.Tensor, masks: np.ndarray, work_side: int, mask_samples: int, seed: int):
        from scipy.ndimage import distance_transform_edt

        small, self.s = _downsample(masks, work_side)
        self.h, self.w = small.shape[1:]
        self.scale = max(self.h, self.w)           # 2D quantities are in units of the long side
        self.points = points                       # (n, P, 3)
        union = small.any(0)
        # an object's points may lie in its own mask or behind another object's: the union of the masks
        self.dt = torch.tensor(distance_transform_edt(~union) / self.scale, dtype=torch.float32)[None, None]
        rng = np.random.default_rng(seed)
        samples = []
        for m in small:
            yy, xx = np.nonzero(m)
            if len(xx) == 0:  # the mask vanished at this resolution: keep its brightest pixel
                yy, xx = np.array([0]), np.array([0])
            k = rng.choice(len(xx), size=mask_samples, replace=len(xx) < mask_samples)
            samples.append(np.stack([xx[k] + 0.5, yy[k] + 0.5], 1) / self.scale)
        self.samples = torch.tensor(np.stack(samples), dtype=torch.float32)       # (n, M, 2)
        self.c = torch.tensor([self.w / 2 / self.scale, self.h / 2 / self.scale])
        ys, xs = np.nonzero(union)
        self.mask_center = torch.tensor([(xs.mean() + 0.5) / self.scale, (ys.mean() + 0.5) / self.scale])
        self.mask_spread = float(np.sqrt(((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2).mean())) / self.scale

    def __call__(self, R: torch.Tensor, t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        S = len(R)
        pc = torch.einsum("sij,npj->snpi", R, self.points) + t[:, None, None]      # (S, n, P, 3)
        z = pc[..., 2:3]
        behind = torch.relu(0.05 - z).mean((1, 2, 3))
        uv = pc[..., :2] / z.clamp_min(0.05) * f[:, None, None, None] + self.c
        grid = torch.stack([uv[..., 0] * self.scale / self.w * 2 - 1, uv[..., 1] * self.scale / self.h * 2 - 1], -1)
        # (a) points outside every mask: distance transform, continued linearly outside the image
        inside = torch.nn.functional.grid_sample(self.dt.expand(S, -1, -1, -1), grid, mode="bilinear",
                                                 padding_mode="border", align_corners=False)[:, 0]
        outside = (torch.relu(grid.abs() - 1) * torch.tensor([self.w, self.h]) / self.scale / 2).sum(-1)
        la = (inside + outside).mean(-1)                                            # (S, n)
        # (b) every sampled mask pixel close to some projected point of its own object;
        # the nearest point is found without gradient, the distance to it carries the gradient
        a = self.samples[None].expand(S, -1, -1, -1)
        with torch.no_grad():
            idx = torch.cdist(a.reshape(-1, a.shape[2], 2), uv.reshape(-1, uv.shape[2], 2)).argmin(-1)
        near = torch.gather(uv.reshape(-1, uv.shape[2], 2), 1, idx[..., None].expand(-1, -1, 2))
        lb = ((a.reshape(-1, a.shape[2], 2) - near) ** 2).sum(-1).add(1e-12).sqrt().mean(-1).reshape(S, -1)
        return (2.0 * la + lb).sum(1) + behind


class _Adam:
    """Plain Adam on a few small tensors (torch.optim pulls in torch._dynamo: seconds of import)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.k = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, lr: float | None = None):
        self.k += 1
        b1, b2 = self.betas
        lr = self.lr if lr is None else lr
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.sub_(lr * (m / (1 - b1 ** self.k)) / ((v / (1 - b2 ** self.k)).sqrt() + self.eps))
            p.grad = None


def _optimise(obj: _Objective, R0, t, lf, iters: int, lr: float, callback=None):
    w = torch.zeros(len(R0), 3, requires_grad=True)
    t = t.clone().requires_grad_(True)
    lf = lf.clone().requires_grad_(True)
    opt = _Adam([w, t, lf], lr)
    for it in range(iters):
        obj(_rodrigues(w) @ R0, t, lf.exp()).sum().backward()
        # cosine decay to 5 % of the step size
        opt.step(lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * it / iters))))
        if callback is not None and it % 10 == 0:
            callback()
    with torch.no_grad():
        R = _rodrigues(w) @ R0
        return R, t.detach(), lf.detach(), obj(R, t, lf.exp())


def fit_camera(vertices: list, faces: list, masks: np.ndarray, elevations=(10.0, 35.0),
               azimuths=(0.0, 45.0, -45.0, 90.0, -90.0, 180.0), seed: int = 0, callback=None) -> CameraFit:
    """Meshes (world coordinates) + instance masks (n, H, W) -> pinhole camera and per-object IoU.

    Stage 1 fits every start view at once at a coarse resolution with few points; stage 2 refines
    the best one at a finer resolution with many points; stage 3 aligns silhouette edges.
    Gradients are switched on here, so it also runs inside ``torch.inference_mode`` (ComfyUI)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _fit_camera(vertices, faces, masks, elevations, azimuths, seed, callback)


def _fit_camera(vertices, faces, masks, elevations, azimuths, seed, callback) -> CameraFit:
    masks = np.asarray(masks).astype(bool)
    if masks.ndim != 3 or len(masks) != len(vertices):
        raise MIDIInputError(f"masks: {len(masks)} masks for {len(vertices)} objects; give one mask per object "
                             "in the scene's node order")
    empty = [i for i in range(len(masks)) if not masks[i].any()]
    if empty:
        raise MIDIInputError(f"masks: mask(s) {empty} are empty; every object needs pixels in its mask")
    n, H, W = masks.shape

    def points(count):
        return torch.tensor(np.stack([sample_surface(v, f, count, seed + i)
                                      for i, (v, f) in enumerate(zip(vertices, faces))]), dtype=torch.float32)

    coarse = _Objective(points(250), masks, 128, 250, seed)
    # starts: orbit views; focal for a 50 degree field of view; translation fitted to the masks' spread
    R0 = torch.tensor(np.stack(_start_rotations(elevations, azimuths)), dtype=torch.float32)   # (S, 3, 3)
    f0 = 0.5 * max(coarse.w, coarse.h) / math.tan(math.radians(25)) / coarse.scale
    allp = coarse.points.reshape(-1, 3)
    pc = allp.mean(0)
    rot = torch.einsum("sij,pj->spi", R0, allp - pc)
    dist = f0 * torch.sqrt((rot[..., :2] ** 2).sum(-1).mean(1)) / max(coarse.mask_spread, 1e-3)
    t0 = -torch.einsum("sij,j->si", R0, pc)
    t0[:, 2] += dist
    t0[:, :2] += ((coarse.mask_center - coarse.c) / f0)[None] * dist[:, None]
    R, t, lf, loss = _optimise(coarse, R0, t0, torch.full((len(R0),), math.log(f0)), 120, 0.02, callback)
    best = int(torch.argmin(loss))
    fine = _Objective(points(1000), masks, 256, 600, seed + 1)
    R, t, lf, loss = _optimise(fine, R[best:best + 1], t[best:best + 1], lf[best:best + 1], 100, 0.005, callback)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R[0].double().numpy(), t[0].double().numpy()
    fpx = float(lf[0].exp()) * fine.scale / fine.s                # back to full-resolution pixels
    cam = _contour_refine(Camera(intrinsics(fpx, W, H), w2c, W, H), vertices, faces, masks, callback=callback)
    return CameraFit(cam, mask_iou(cam, vertices, faces, masks), float(loss[0]), len(R0))


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Pixels to the mask's edge, negative inside; a pixel centre next to the edge is at -0.5 / +0.5."""
    from scipy.ndimage import distance_transform_edt

    return np.where(mask, 0.5 - distance_transform_edt(mask), distance_transform_edt(~mask) - 0.5)


def _contour_points(r, vertices_t: torch.Tensor, faces_t: torch.Tensor, count: int):
    """3D points under the rendered silhouette edge of each object (edge against background or
    something farther away; edges where the object is occluded are not its silhouette)."""
    obj, depth = r.obj, r.depth
    pts = (vertices_t[faces_t[r.face.clamp_min(0)]] * r.bary[..., None]).sum(-2)
    edge = torch.zeros_like(obj, dtype=torch.bool)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        nb_obj = torch.roll(obj, (dy, dx), (0, 1))
        nb_depth = torch.roll(depth, (dy, dx), (0, 1))
        edge |= (obj >= 0) & (nb_obj != obj) & ((nb_obj < 0) | (nb_depth > depth))
    out = []
    for i in range(int(obj.max()) + 1 if obj.numel() else 0):
        sel = torch.nonzero(edge & (obj == i))
        if len(sel) > count:
            sel = sel[torch.linspace(0, len(sel) - 1, count).long()]
        out.append(pts[sel[:, 0], sel[:, 1]])
    return out


def _contour_refine(cam: Camera, vertices: list, faces: list, masks: np.ndarray, work_side: int = 384,
                    rounds: int = 6, steps: int = 30, callback=None) -> Camera:
    """Silhouette-edge alignment: render, take the 3D points under each object's silhouette edge,
    move the camera so they project onto the edge of that object's mask; repeat."""
    from .raster import concat_meshes

    small, s = _downsample(masks, work_side)
    n, h, w = small.shape
    sdf = torch.tensor(np.stack([_signed_distance(m) for m in small]), dtype=torch.float32)[:, None]  # (n,1,h,w)
    V, F, _, _ = concat_meshes(vertices, faces)
    work = cam.scaled(w, h)
    R0 = torch.tensor(work.R, dtype=torch.float32)
    t = torch.tensor(work.t, dtype=torch.float32)
    lf = torch.tensor(math.log(work.K[0, 0]), dtype=torch.float32)
    wv = torch.zeros(3)
    c = torch.tensor([w / 2, h / 2])
    for _ in range(rounds):
        r = rasterize(vertices, faces, work.K, work.world_to_camera, h, w)
        contour = _contour_points(r, V, F, 2000)
        if not any(len(p) for p in contour):
            break
        wv, t, lf = (x.detach().clone().requires_grad_(True) for x in (wv, t, lf))
        opt = _Adam([wv, t, lf], 2e-3)
        for _ in range(steps):
            R = _rodrigues(wv) @ R0
            loss = 0.0
            for i, X in enumerate(contour):
                if len(X) == 0 or i >= n:
                    continue
                pc = X @ R.T + t
                uv = pc[:, :2] / pc[:, 2:3].clamp_min(1e-3) * lf.exp() + c
                grid = (uv / torch.tensor([w, h]) * 2 - 1)[None, None]
                d = torch.nn.functional.grid_sample(sdf[i:i + 1], grid, mode="bilinear", padding_mode="border",
                                                    align_corners=False)[0, 0, 0]
                loss = loss + (d + 0.5).abs().clamp(max=20.0).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            R = _rodrigues(wv) @ R0
            m = np.eye(4)
            m[:3, :3], m[:3, 3] = R.double().numpy(), t.double().numpy()
            work = Camera(intrinsics(float(lf.exp()), w, h), m, w, h)
        if callback is not None:
            callback()
    return work.scaled(cam.width, cam.height)


def mask_iou(camera: Camera, vertices: list, faces: list, masks: np.ndarray, max_side: int = 512) -> list:
    """Per object: IoU between its visible rendered silhouette (depth test across objects) and its mask."""
    small, s = _downsample(np.asarray(masks).astype(bool), max_side)
    cam = camera.scaled(small.shape[2], small.shape[1]) if s != 1.0 else camera
    r = rasterize(vertices, faces, cam.K, cam.world_to_camera, cam.height, cam.width)
    obj = r.obj.numpy()
    out = []
    for i, m in enumerate(small):
        vis = obj == i
        union = (vis | m).sum()
        out.append(float((vis & m).sum() / union) if union else 0.0)
    return out
