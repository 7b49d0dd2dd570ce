"""The one input layer: every image, mask, seg map, size, count and number a user gives
is decoded and checked here, the same way for the CLI, ``MIDIPipeline`` and the nodes.

Each check raises ``MIDIInputError`` with one line that names the input and the fix,
before any slow work.
"""
from .arrays import to_numpy
from .images import as_rgb_uint8, open_image, read_image
from .labels import (check_label_map, label_map_from_image, masks_from_label_map, masks_to_label_map,
                     read_label_map, split_label_map, to_label_map)
from .limits import (GUIDANCE_MAX, OCTREE_DEPTH_MAX, OCTREE_DEPTH_MIN, SEED_MAX, STEPS_MAX, TRAINED_MAX_INSTANCES,
                     check_guidance, check_instance_count, check_max_setting, check_octree_depth, check_seed,
                     check_steps, enforce_count)
from .masks import as_mask_stack, masks_from_batch, prepare_masks, read_mask, resolve_overlaps
from .sizes import MIN_IMAGE_SIDE, check_aspect, check_image_size, check_same_size, fit_size, size_str

__all__ = [
    "to_numpy", "as_rgb_uint8", "open_image", "read_image",
    "check_label_map", "label_map_from_image", "masks_from_label_map", "masks_to_label_map", "read_label_map",
    "split_label_map", "to_label_map",
    "GUIDANCE_MAX", "OCTREE_DEPTH_MAX", "OCTREE_DEPTH_MIN", "SEED_MAX", "STEPS_MAX", "TRAINED_MAX_INSTANCES",
    "check_guidance", "check_instance_count", "check_max_setting", "check_octree_depth", "check_seed",
    "check_steps", "enforce_count",
    "as_mask_stack", "masks_from_batch", "prepare_masks", "read_mask", "resolve_overlaps",
    "MIN_IMAGE_SIDE", "check_aspect", "check_image_size", "check_same_size", "fit_size", "size_str",
]
