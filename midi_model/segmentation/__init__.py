"""SegmentScene library: one image -> one boolean mask per object, in MIDI's instance order.

Entry point: ``segment_scene(image, mode=..., ...) -> SegmentationResult``.

Modes and instance order
------------------------
``text``      labels (``"sofa. table. lamp"``) -> Grounding DINO, one pass per label, boxes
              with score > ``box_threshold`` -> SAM -> masks. Order: detection score, highest
              first (the official zero-shot pipeline's order; the official script paints
              detection i as label i+1). Near-duplicate masks (IoU > ``dedupe_iou``) keep the
              first; ``dedupe_iou=0`` keeps them all as the official script does.
``boxes``     ``"x0,y0,x1,y1; ..."`` or a (K,4) array -> one instance per box, in the given order.
``points``    ``"x,y[,label]; ... | ..."`` -> one instance per ``|``-separated group (see
              ``prompts.py`` for the grammar), in the given order.
``automatic`` SAM's automatic mask generator, then ``filter_automatic_masks``: no tiny,
              near-full-image or border-hugging (background) masks; largest first, disjoint,
              at most ``max_instances`` (never an error for too many).
``label_map`` an existing seg map: every non-zero grey level of its ``convert('L')`` one
              instance, ascending grey value (exactly the official reading; colours via luma).
``masks``     a mask batch (N,H,W), in batch order; empty masks are dropped with a warning
              (``empty_masks='error'`` refuses them instead).

Masks: SAM's 3 candidates are united (``multimask='union'``, official; ``'best'`` takes the
highest predicted IoU). Then, per mask: ``polygon_refinement`` (largest outline, filled; on
for text/boxes/points), hole filling (``fill_holes``, holes up to ``max_hole_area``) and
speck removal (``remove_small``, pieces under ``min_area``) -- both on for the SAM modes,
off for imports, which stay exactly as given. Areas: 0 off, below 1 a fraction of the image
area, 1 and above pixels. Then the masks are made disjoint: ``overlap='later'`` (default, as
the official label map and ``masks_to_label_map``: a later instance wins shared pixels) or
``'earlier'``; masks left empty are dropped (with a warning in the prompt/import modes).

Counts: none -> ``MIDIInputError`` saying what to change; more than ``max_instances``
(default 7, the trained maximum; above 7 needs ``allow_more_instances=True`` and warns) ->
``MIDIInputError``, or ``too_many='keep_first'`` keeps the first ones in order.
"""
from .api import MODES, SegmentationResult, segment_scene
from .automatic import border_fraction, filter_automatic_masks, generate_candidates
from ..inputs import TRAINED_MAX_INSTANCES, masks_from_batch, masks_from_label_map, resolve_overlaps
from .cleanup import area_to_pixels, clean_mask, dedupe_masks, fill_holes, largest_outline_filled, remove_specks
from .grounding_dino import (DEFAULT_REPO, Detection, GroundingDinoDetector, download_grounding_dino,
                             load_grounding_dino)
from .preview import render_preview
from .prompts import parse_boxes, parse_labels, parse_points
from .sam_loader import SamConfig, build_sam, infer_sam_config, load_sam, read_state_dict

__all__ = [
    "MODES", "SegmentationResult", "segment_scene", "TRAINED_MAX_INSTANCES",
    "load_sam", "build_sam", "infer_sam_config", "read_state_dict", "SamConfig",
    "load_grounding_dino", "download_grounding_dino", "GroundingDinoDetector", "Detection", "DEFAULT_REPO",
    "parse_labels", "parse_boxes", "parse_points",
    "generate_candidates", "filter_automatic_masks", "border_fraction",
    "area_to_pixels", "clean_mask", "dedupe_masks", "fill_holes", "largest_outline_filled",
    "remove_specks", "resolve_overlaps",
    "masks_from_label_map", "masks_from_batch", "render_preview",
]
