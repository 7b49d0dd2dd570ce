"""Automatic mode: SAM's grid-prompted mask generator, then a filter that turns its many
overlapping, nested candidates into a few disjoint object masks."""
from __future__ import annotations

import numpy as np
import torch


def generate_candidates(sam, image_rgb: np.ndarray, *, points_per_side: int = 32, points_per_batch: int = 64,
                        pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                        box_nms_thresh: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """SamAutomaticMaskGenerator -> candidates (M,H,W) bool, scores (M,) (predicted IoU)."""
    from segment_anything import SamAutomaticMaskGenerator

    # min_mask_region_area stays 0: SAM's own small-region pass needs OpenCV; cleanup.py does it
    gen = SamAutomaticMaskGenerator(
        sam, points_per_side=int(points_per_side), points_per_batch=int(points_per_batch),
        pred_iou_thresh=float(pred_iou_thresh), stability_score_thresh=float(stability_score_thresh),
        box_nms_thresh=float(box_nms_thresh), min_mask_region_area=0, output_mode="binary_mask")
    with torch.inference_mode():
        records = gen.generate(np.ascontiguousarray(image_rgb))
    h, w = image_rgb.shape[:2]
    if not records:
        return np.zeros((0, h, w), bool), np.zeros((0,), np.float32)
    masks = np.stack([np.asarray(r["segmentation"], bool) for r in records])
    scores = np.asarray([float(r.get("predicted_iou", 1.0)) for r in records], np.float32)
    return masks, scores


def border_fraction(mask: np.ndarray) -> float:
    """Share of the image's outermost pixel ring covered by the mask (walls, floors, sky ~ high)."""
    ring = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(ring.mean()) if ring.size else 0.0


def filter_automatic_masks(masks: np.ndarray, scores=None, *, min_area_px: int = 0, max_area_fraction: float = 0.8,
                           max_border_fraction: float = 0.5, min_kept_fraction: float = 0.5,
                           max_instances: int = 7) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Candidates -> at most ``max_instances`` disjoint object masks, largest first.

    1. drop candidates smaller than ``min_area_px``, larger than ``max_area_fraction`` of the
       image (near-full-image masks) or covering more than ``max_border_fraction`` of the
       image border (background: walls, floor, sky);
    2. go through the rest from largest to smallest; each takes only pixels no larger mask
       took (earlier = larger wins); a candidate that keeps less than ``min_kept_fraction`` of
       itself (a part of an object already taken, or a duplicate) or less than ``min_area_px``
       is dropped;
    3. stop at ``max_instances``.

    Returns (masks (N,H,W) bool, scores (N,), indices of the chosen candidates)."""
    masks = np.asarray(masks, bool)
    n = len(masks)
    scores = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
    if n == 0:
        return masks.copy(), scores.copy(), []
    h, w = masks.shape[1:]
    areas = masks.reshape(n, -1).sum(1)
    ok = [i for i in range(n)
          if areas[i] > 0 and areas[i] >= min_area_px and areas[i] <= max_area_fraction * h * w
          and border_fraction(masks[i]) <= max_border_fraction]
    ok.sort(key=lambda i: (-int(areas[i]), i))  # stable: ties keep the generator's order
    claimed = np.zeros((h, w), bool)
    kept, chosen = [], []
    for i in ok:
        if len(kept) >= max_instances:
            break
        own = masks[i] & ~claimed
        a = int(own.sum())
        if a == 0 or a < min_area_px or a < min_kept_fraction * areas[i]:
            continue
        kept.append(own)
        chosen.append(i)
        claimed |= own
    if not kept:
        return np.zeros((0, h, w), bool), np.zeros((0,), np.float32), []
    return np.stack(kept), scores[chosen], chosen
