"""Which coordinate frame a textured scene is written in.

- ``midi`` (default): MIDI's scene frame, exactly as the meshes were given ([-1, 1]^3, +Y up).
- ``camera``: the fitted photo camera's frame in the OpenGL convention: camera at the origin,
  +Y up, +X right, looking down -Z (``camera.world_to_camera`` followed by flipping Y and Z).
  The scene then appears in a viewer's default camera as it does in the photo.
"""
from __future__ import annotations

import numpy as np

from ..errors import MIDIInputError
from .camera import Camera

FRAMES = ("midi", "camera")


def frame_transform(frame: str, camera: Camera | None) -> np.ndarray:
    """4x4 matrix from MIDI's frame to the chosen export frame."""
    if frame == "midi":
        return np.eye(4)
    if frame == "camera":
        if camera is None:
            raise MIDIInputError("frame 'camera' needs the fitted camera")
        return camera.camera_frame_transform()
    raise MIDIInputError(f"frame '{frame}': choose one of {', '.join(FRAMES)}")
