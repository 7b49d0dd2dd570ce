"""``segment_scene``: one image -> one mask per object, in MIDI's instance order."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import MIDIInputError
from ..inputs import (TRAINED_MAX_INSTANCES, as_rgb_uint8, check_max_setting, enforce_count, masks_from_batch,
                      masks_from_label_map, masks_to_label_map, resolve_overlaps)
from ..scene import numbered_labels
from .automatic import filter_automatic_masks, generate_candidates
from .cleanup import area_to_pixels, clean_mask, dedupe_masks, remove_specks
from .grounding_dino import GroundingDinoDetector, load_grounding_dino
from .preview import render_preview
from .prompts import parse_boxes, parse_labels, parse_points
from .sam_loader import load_sam
from .sam_predict import make_predictor, predict_boxes, predict_points

MODES = ("text", "boxes", "points", "automatic", "label_map", "masks")
_SAM_MODES = ("text", "boxes", "points", "automatic")


@dataclass
class SegmentationResult:
    """``masks`` (N,H,W) bool, disjoint, in instance order (index i = MIDI batch slot i);
    ``labels`` N strings; ``scores`` (N,) float32 (detector score in text mode, SAM's
    predicted IoU in boxes/points/automatic, 1.0 for imports); ``preview`` (H,W,3) uint8;
    ``ids`` (N,) int64 (the grey value for label-map imports, the input batch index + 1 for
    mask imports, else 1..N); ``boxes`` (N,4) float32 tight x0,y0,x1,y1 (x1/y1 exclusive)
    around each final mask."""
    masks: np.ndarray
    labels: list
    scores: np.ndarray
    preview: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def label_map(self) -> np.ndarray:
        """(H,W) uint8, instance i has value i+1 (masks are disjoint, so nothing is lost)."""
        return masks_to_label_map(self.masks)


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


def _resolve_sam(sam, device, mode):
    if sam is None:
        raise MIDIInputError(
            f"mode {mode!r} needs a SAM model: give a checkpoint such as models/sams/sam_vit_b_01ec64.pth")
    if isinstance(sam, (str, Path)):
        return load_sam(sam, device=device or "cpu")
    return sam.to(device) if device is not None else sam


def _resolve_detector(detector, device):
    if detector is None:
        raise MIDIInputError(
            "mode 'text' needs a Grounding DINO model folder (e.g. models/grounding-dino/grounding-dino-tiny)")
    if isinstance(detector, (str, Path)):
        return load_grounding_dino(detector, device=device or "cpu")
    if not isinstance(detector, GroundingDinoDetector):
        raise MIDIInputError(f"detector: expected a folder or a loaded Grounding DINO, got {type(detector).__name__}")
    return detector.to(device) if device is not None else detector


def segment_scene(
    image,
    mode: str = "text",
    *,
    prompt=None,
    boxes=None,
    points=None,
    seg=None,
    masks=None,
    sam=None,
    detector=None,
    device=None,
    box_threshold: float = 0.3,
    text_threshold: float = 0.3,
    dedupe_iou: float | None = 0.9,
    multimask: str = "union",
    polygon_refinement: bool | None = None,
    points_per_side: int = 32,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    box_nms_thresh: float = 0.7,
    max_area_fraction: float = 0.8,
    max_border_fraction: float = 0.5,
    min_kept_fraction: float = 0.5,
    remove_small: bool | None = None,
    min_area: float = 0.001,
    fill_holes: bool | None = None,
    max_hole_area: float | None = 0.001,
    overlap: str = "later",
    max_instances: int = TRAINED_MAX_INSTANCES,
    allow_more_instances: bool = False,
    too_many: str = "error",
    empty_masks: str = "drop",
) -> SegmentationResult:
    """Per-instance masks for MIDI. See ``midi_model/segmentation/__init__.py`` for the modes,
    their order rules and every parameter."""
    if mode not in MODES:
        raise MIDIInputError(f"unknown SegmentScene mode {mode!r}; choose one of {', '.join(MODES)}")
    max_instances = check_max_setting(max_instances, allow_more_instances)
    if overlap not in ("later", "earlier"):
        raise MIDIInputError(f"overlap must be 'later' or 'earlier', got {overlap!r}")
    if too_many not in ("error", "keep_first"):
        raise MIDIInputError(f"too_many must be 'error' or 'keep_first', got {too_many!r}")
    if empty_masks not in ("drop", "error"):
        raise MIDIInputError(f"empty_masks must be 'drop' or 'error', got {empty_masks!r}")
    if multimask not in ("union", "best"):
        raise MIDIInputError(f"multimask must be 'union' or 'best', got {multimask!r}")
    rgb = as_rgb_uint8(image) if (image is not None or mode in _SAM_MODES) else None
    hw = rgb.shape[:2] if rgb is not None else None
    sam_mode = mode in _SAM_MODES
    refine = (mode in ("text", "boxes", "points")) if polygon_refinement is None else bool(polygon_refinement)
    do_specks = sam_mode if remove_small is None else bool(remove_small)
    do_fill = sam_mode if fill_holes is None else bool(fill_holes)

    ids = None
    scores = None
    drop_note = "clean-up"
    if mode == "label_map":
        ids, out = masks_from_label_map(seg, hw)
        labels = numbered_labels("seg", ids)
        none_hint = ("the seg map has no non-zero values: paint each object with its own non-zero grey level or "
                     "colour (0 = background)")
        many_hint = "merge or erase objects in the seg map"
    elif mode == "masks":
        keep, out = masks_from_batch(masks, hw, empty=empty_masks)
        ids = keep + 1
        labels = numbered_labels("mask", ids)
        none_hint = "all masks in the batch are empty (or no masks were given): give at least one non-empty mask"
        many_hint = "give fewer masks"
    else:
        if mode == "text" and not parse_labels(prompt):
            raise MIDIInputError("mode 'text' needs a prompt naming the objects, e.g. 'sofa. table. lamp'")
        sam_model = _resolve_sam(sam, device, mode)
        if mode == "text":
            words = parse_labels(prompt)
            det = _resolve_detector(detector, device)
            found = det.detect(Image.fromarray(rgb), words, box_threshold=box_threshold,
                               text_threshold=text_threshold)
            tweak = f"lower box_threshold (now {box_threshold:.2f})" + (
                f" or text_threshold (now {text_threshold:.2f})" if text_threshold > 0 else "")
            none_hint = f"SegmentScene found no objects for prompt {prompt!r}: {tweak} or change the prompt"
            many_hint = f"raise box_threshold (now {box_threshold:.2f}) or name fewer objects"
            if not found:
                raise MIDIInputError(none_hint)
            predictor = make_predictor(sam_model, rgb)
            out, _ = predict_boxes(predictor, np.stack([d.box for d in found]), multimask)
            labels = [d.label for d in found]
            scores = np.asarray([d.score for d in found], np.float32)
            # from here on, "none" means SAM/clean-up emptied every detected box
            none_hint = (f"SegmentScene: the {len(found)} boxes found for prompt {prompt!r} gave empty masks after "
                         f"clean-up: lower min_area (now {min_area}) or change the prompt")
            drop_note = "duplicate removal or clean-up"
        elif mode == "boxes":
            bx = parse_boxes(boxes, hw)
            if len(bx) == 0:
                raise MIDIInputError("mode 'boxes' needs at least one box in pixels: 'x0,y0,x1,y1; x0,y0,x1,y1'")
            out, scores = predict_boxes(make_predictor(sam_model, rgb), bx, multimask)
            labels = numbered_labels("box", range(1, len(bx) + 1))
            none_hint = "SegmentScene: every box gave an empty mask after clean-up: lower min_area or redraw the boxes"
            many_hint = "give fewer boxes"
        elif mode == "points":
            groups = parse_points(points, hw)
            if not groups:
                raise MIDIInputError(
                    "mode 'points' needs points in pixels: 'x,y[,label]; ... | x,y' ('|' separates objects, "
                    "label 1 = on the object, 0 = not)")
            out, scores = predict_points(make_predictor(sam_model, rgb), groups, multimask)
            labels = numbered_labels("points", range(1, len(groups) + 1))
            none_hint = "SegmentScene: every point group gave an empty mask after clean-up: lower min_area or move the points"
            many_hint = "give fewer point groups"
        else:  # automatic
            out, scores = generate_candidates(
                sam_model, rgb, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                stability_score_thresh=stability_score_thresh, box_nms_thresh=box_nms_thresh)
            labels = None
            none_hint = (f"SegmentScene (automatic) kept no objects: lower pred_iou_thresh (now {pred_iou_thresh:.2f}) "
                         f"or stability_score_thresh (now {stability_score_thresh:.2f}), lower min_area (now {min_area}), "
                         f"or raise max_area_fraction (now {max_area_fraction:.2f}) / max_border_fraction "
                         f"(now {max_border_fraction:.2f})")
            many_hint = "lower max_instances"

    h, w = out.shape[1:] if out.ndim == 3 and len(out) else (hw if hw is not None else (0, 0))
    image_area = int(h) * int(w)
    min_px = area_to_pixels(min_area, image_area) if do_specks else 0
    hole_px = None if max_hole_area is None else area_to_pixels(max_hole_area, image_area)
    n_in = len(out)
    if scores is None:
        scores = np.ones(n_in, np.float32)

    # 1. each mask on its own: outline refinement, holes, specks (before overlaps, so that a
    #    hole left by another object in front is not filled back in)
    if refine or do_fill or min_px:
        out = np.stack([clean_mask(m, min_area_px=min_px, fill=do_fill, max_hole_px=hole_px, refine=refine)
                        for m in out]) if n_in else out
    # 2. the instances, disjoint
    if mode == "automatic":
        out, scores, chosen = filter_automatic_masks(
            out, scores, min_area_px=min_px, max_area_fraction=max_area_fraction,
            max_border_fraction=max_border_fraction, min_kept_fraction=min_kept_fraction,
            max_instances=max_instances)
        labels = numbered_labels("object", range(1, len(out) + 1))
    else:
        if mode == "text" and dedupe_iou:
            keep = dedupe_masks(out, dedupe_iou)
            out, scores, labels = out[keep], scores[keep], [labels[i] for i in keep]
        # a label map is disjoint already; this only matters if its clean-up was switched on
        out = resolve_overlaps(out, overlap)
        if min_px:
            out = np.stack([remove_specks(m, min_px) for m in out]) if len(out) else out
    # 3. drop what is left empty
    nonempty = [i for i in range(len(out)) if out[i].any()]
    if len(nonempty) < len(out) and mode != "automatic" and nonempty:
        gone = [labels[i] for i in range(len(out)) if i not in set(nonempty)]
        warnings.warn(f"SegmentScene: dropped {', '.join(gone)}: no pixels left after {drop_note} "
                      f"and overlap resolution (overlap={overlap!r})", stacklevel=2)
    out, scores, labels = out[nonempty], scores[nonempty], [labels[i] for i in nonempty]
    ids = (ids[nonempty] if ids is not None else np.arange(1, len(out) + 1, dtype=np.int64)).astype(np.int64)
    # 4. count
    n = enforce_count(len(out), max_instances, too_many, none_hint=none_hint, many_hint=many_hint)
    out, scores, labels, ids = out[:n], scores[:n], labels[:n], ids[:n]
    preview = render_preview(rgb, out)
    return SegmentationResult(masks=np.ascontiguousarray(out, dtype=bool), labels=list(labels),
                              scores=np.asarray(scores, np.float32), preview=preview, ids=ids,
                              boxes=_tight_boxes(out))
