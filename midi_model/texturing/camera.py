"""The camera as plain data: intrinsics K (pixels) and a world-to-camera matrix (OpenCV axes).

OpenCV axes: x right, y down, z forward (the direction the camera looks). Pixel (u, v) covers
[u, u+1) x [v, v+1); its centre is (u + 0.5, v + 0.5), so ``cx = width / 2`` is the image centre.
``ortho=True`` is an orthographic camera: u = fx * x + cx, v = fy * y + cy (x, y in camera units),
depth is z. That is only used for the multi-view control renders, never written to camera.json.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MIDIInputError

# OpenCV camera axes -> OpenGL camera axes (x right, y up, looking down -z)
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Camera:
    K: np.ndarray                 # (3, 3) float64, pixels
    world_to_camera: np.ndarray   # (4, 4) float64, OpenCV axes
    width: int
    height: int
    ortho: bool = False

    def __post_init__(self):
        self.K = np.asarray(self.K, np.float64).reshape(3, 3)
        self.world_to_camera = np.asarray(self.world_to_camera, np.float64).reshape(4, 4)
        self.width, self.height = int(self.width), int(self.height)

    @property
    def R(self) -> np.ndarray:
        return self.world_to_camera[:3, :3]

    @property
    def t(self) -> np.ndarray:
        return self.world_to_camera[:3, 3]

    @property
    def center(self) -> np.ndarray:
        """Camera position in world coordinates."""
        return -self.R.T @ self.t

    def to_world_points(self, points_cam: np.ndarray) -> np.ndarray:
        return (np.asarray(points_cam) - self.t) @ self.R

    def to_camera_points(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points) @ self.R.T + self.t

    def camera_frame_transform(self) -> np.ndarray:
        """4x4 world -> 'camera frame' export: camera at the origin, Y up, looking down -Z (OpenGL)."""
        return CV_TO_GL @ self.world_to_camera

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera for an image resized to width x height."""
        K = self.K.copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Camera(K, self.world_to_camera.copy(), width, height, self.ortho)

    def to_dict(self) -> dict:
        if self.ortho:
            raise ValueError("orthographic view cameras are not written to camera.json")
        return {"width": self.width, "height": self.height, "K": self.K.tolist(),
                "world_to_camera": self.world_to_camera.tolist()}

    @classmethod
    def from_dict(cls, d: dict, what: str = "camera") -> "Camera":
        try:
            cam = cls(np.asarray(d["K"], np.float64), np.asarray(d["world_to_camera"], np.float64),
                      int(d["width"]), int(d["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise MIDIInputError(f"{what}: expected 'width', 'height', 'K' (3x3) and 'world_to_camera' (4x4) "
                                 f"({e})") from None
        return cam

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """4x4 world-to-camera (OpenCV axes) of a camera at ``eye`` looking at ``target``; image up ~ ``up``."""
    eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)  # right = forward x up (OpenCV: y points down)
    if np.linalg.norm(x) < 1e-8:
        x = np.cross(z, np.array([0.0, 0.0, 1.0]) if abs(up[2]) < 0.9 else np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    m = np.eye(4)
    m[:3, :3] = R
    m[:3, 3] = -R @ eye
    return m


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)


def project(points_cam: torch.Tensor, K: torch.Tensor, ortho: bool = False) -> torch.Tensor:
    """Camera-space points (..., 3) -> pixel coordinates (..., 2) (continuous, pixel centres at +0.5)."""
    z = points_cam[..., 2:3]
    xy = points_cam[..., :2] if ortho else points_cam[..., :2] / z.clamp_min(1e-8)
    return xy * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
