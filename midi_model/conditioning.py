"""Per-instance image conditioning: instance crops, encoder pixels, CLIP + DINOv2 embeddings.

CLIP sees each instance's RGB (white outside the instance, full frame, not cropped).
DINOv2 sees 7 channels: [instance RGB, scene RGB, mask], the RGB through the folder's
BitImageProcessor and the mask nearest-resized from the full frame straight to the
processor's output size, unnormalised (the official behaviour, misalignment included).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import MIDIInputError
from .inputs import as_rgb_uint8, check_image_size, prepare_masks
from .inputs.limits import warn_beyond_trained
from .inputs.sizes import warn_outside_centre_square


@dataclass
class MIDIConditioning:
    image_embeds_1: torch.Tensor  # (n, 1, D1) CLIP image_embeds
    image_embeds_2: torch.Tensor  # (n, L, D2) DINOv2 last_hidden_state
    instance_rgb: np.ndarray  # (n, H, W, 3) uint8, white outside each instance
    instance_mask: np.ndarray  # (n, H, W) uint8 0/255
    scene_rgb: np.ndarray  # (H, W, 3) uint8
    extras: dict = field(default_factory=dict)  # encoder pixels etc., for inspection

    @property
    def num_instances(self) -> int:
        return int(self.image_embeds_1.shape[0])


def check_masks(rgb: np.ndarray, masks, max_instances: int | None = None) -> np.ndarray:
    """-> (N,H,W) bool, disjoint; one clear error for every way masks can be unusable
    (the input layer's contract, shared with the CLI and the nodes)."""
    check_image_size(rgb.shape)
    m = prepare_masks(masks, rgb.shape[:2])
    if max_instances is not None and len(m) > max_instances:
        raise MIDIInputError(f"{len(m)} instances given, more than the allowed {max_instances}: "
                             f"merge or drop objects, or raise max_instances")
    warn_beyond_trained(len(m), "masks")
    return m


def pad_scene(rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official ``do_image_padding``: when the objects reach past 80 % of a side, grow it
    to 1.25x their extent (image centred on white), then pad right/bottom to a square."""
    h, w = rgb.shape[:2]
    rows, cols = np.nonzero(masks.any(0))
    if rows.size == 0:
        return rgb, masks
    # the official code compares rows with width//2 and columns with height//2 (harmless when square)
    ext = max(max(abs(rows.max() - w // 2), abs(rows.min() - w // 2)) * 2,
              max(abs(cols.max() - h // 2), abs(cols.min() - h // 2)) * 2)
    new_w = int(ext / 4 * 5) if ext > w * 0.8 else w
    new_h = int(ext / 4 * 5) if ext > h * 0.8 else h
    side = max(new_w, new_h)
    x0, y0 = (new_w - w) // 2, (new_h - h) // 2
    out_rgb = np.full((side, side, 3), 255, np.uint8)
    out_masks = np.zeros((len(masks), side, side), bool)
    # PIL paste semantics: clip what falls outside the canvas
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    cw, ch = min(w - sx0, new_w - dx0), min(h - sy0, new_h - dy0)
    out_rgb[dy0:dy0 + ch, dx0:dx0 + cw] = rgb[sy0:sy0 + ch, sx0:sx0 + cw]
    out_masks[:, dy0:dy0 + ch, dx0:dx0 + cw] = masks[:, sy0:sy0 + ch, sx0:sx0 + cw]
    return out_rgb, out_masks


def split_instances(rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> instance RGB (white outside) (n,H,W,3) and masks 0/255 (n,H,W), both uint8."""
    inst = np.where(masks[..., None], rgb[None], np.uint8(255)).astype(np.uint8)
    return inst, masks.astype(np.uint8) * 255


def clip_pixels(processor, instance_rgb: np.ndarray) -> torch.Tensor:
    images = [Image.fromarray(im) for im in instance_rgb]
    return processor(images, return_tensors="pt")["pixel_values"]


def dino_pixels(processor, instance_rgb: np.ndarray, scene_rgb: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    inst = processor([Image.fromarray(im) for im in instance_rgb], return_tensors="pt")["pixel_values"]
    scene = processor([Image.fromarray(scene_rgb)] * len(instance_rgb), return_tensors="pt")["pixel_values"]
    m = torch.from_numpy((mask / 255.0).astype(np.float32)).unsqueeze(1)
    m = F.interpolate(m, size=inst.shape[-2:], mode="nearest")
    return torch.cat([inst, scene, m], dim=1)


@torch.no_grad()
def encode_pixels(clip_model, dino_model, clip_px: torch.Tensor, dino_px: torch.Tensor):
    """Run both encoders where they sit; returns float32 CPU embeddings (n,1,D1), (n,L,D2)."""
    p1 = next(clip_model.parameters())
    e1 = clip_model(pixel_values=clip_px.to(p1.device, p1.dtype)).image_embeds.unsqueeze(1)
    p2 = next(dino_model.parameters())
    e2 = dino_model(pixel_values=dino_px.to(p2.device, p2.dtype)).last_hidden_state
    return e1.float().cpu(), e2.float().cpu()


def prepare_instances(image, masks, image_padding: bool = False, max_instances: int | None = None):
    """image + masks -> (instance_rgb, instance_mask, scene_rgb), validated."""
    rgb = as_rgb_uint8(image)
    m = check_masks(rgb, masks, max_instances)
    if image_padding:
        rgb, m = pad_scene(rgb, m)
    warn_outside_centre_square(m)
    inst, mask = split_instances(rgb, m)
    return inst, mask, rgb


def build_conditioning(image, masks, clip_model, dino_model, clip_processor, dino_processor,
                       image_padding: bool = False, max_instances: int | None = None) -> MIDIConditioning:
    inst, mask, scene = prepare_instances(image, masks, image_padding, max_instances)
    clip_px = clip_pixels(clip_processor, inst)
    dino_px = dino_pixels(dino_processor, inst, scene, mask)
    e1, e2 = encode_pixels(clip_model, dino_model, clip_px, dino_px)
    return MIDIConditioning(e1, e2, inst, mask, scene,
                            extras={"clip_pixel_values": clip_px, "dino_pixel_values": dino_px})

