"""Run SAM on box and point prompts (segment-anything's SamPredictor)."""
from __future__ import annotations

import numpy as np
import torch

MULTIMASK_MODES = ("union", "best")


def make_predictor(sam, image_rgb: np.ndarray):
    """Encode the image once; every prompt reuses the embedding."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    with torch.inference_mode():
        predictor.set_image(np.ascontiguousarray(image_rgb), image_format="RGB")
    return predictor


def _combine(masks: torch.Tensor, ious: torch.Tensor, multimask: str) -> tuple[np.ndarray, np.ndarray]:
    """(K,M,H,W) candidates -> (K,H,W). 'union': any candidate (official: the mean of the
    binarised candidates > 0); 'best': the one with the highest predicted IoU."""
    if multimask == "union":
        out = masks.any(dim=1)
    elif multimask == "best":
        best = ious.argmax(dim=1)
        out = masks[torch.arange(len(masks)), best]
    else:
        raise ValueError(f"multimask must be one of {MULTIMASK_MODES}, got {multimask!r}")
    return out.cpu().numpy().astype(bool), ious.max(dim=1).values.float().cpu().numpy()


def predict_boxes(predictor, boxes: np.ndarray, multimask: str = "union", chunk: int = 16):
    """(K,4) pixel boxes -> masks (K,H,W) bool, scores (K,) (SAM's predicted IoU)."""
    h, w = predictor.original_size
    if len(boxes) == 0:
        return np.zeros((0, h, w), bool), np.zeros((0,), np.float32)
    device = predictor.device
    outs, scores = [], []
    with torch.inference_mode():
        for s in range(0, len(boxes), chunk):
            b = torch.as_tensor(np.asarray(boxes[s:s + chunk], np.float32), device=device)
            b = predictor.transform.apply_boxes_torch(b, (h, w))
            m, iou, _ = predictor.predict_torch(None, None, boxes=b, multimask_output=True)
            mm, sc = _combine(m, iou, multimask)
            outs.append(mm)
            scores.append(sc)
    return np.concatenate(outs), np.concatenate(scores).astype(np.float32)


def predict_points(predictor, groups, multimask: str = "union"):
    """[(coords (P,2), labels (P,)), ...] -> masks (G,H,W) bool, scores (G,), one per group."""
    h, w = predictor.original_size
    outs, scores = [], []
    device = predictor.device
    with torch.inference_mode():
        for xy, lab in groups:
            c = predictor.transform.apply_coords_torch(torch.as_tensor(xy[None], dtype=torch.float32, device=device), (h, w))
            l = torch.as_tensor(lab[None], dtype=torch.int64, device=device)
            m, iou, _ = predictor.predict_torch(c, l, multimask_output=True)
            mm, sc = _combine(m, iou, multimask)
            outs.append(mm)
            scores.append(sc)
    if not outs:
        return np.zeros((0, h, w), bool), np.zeros((0,), np.float32)
    return np.concatenate(outs), np.concatenate(scores).astype(np.float32)
