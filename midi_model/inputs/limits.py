"""Numbers a user sets: instance counts, seed, steps, guidance, octree depth. One home for the
ranges, so the CLI, the library and the nodes refuse the same values with the same words."""
from __future__ import annotations

import math
import warnings

from ..errors import MIDIInputError

#: MIDI was trained (and evaluated) with at most 7 instances per scene.
TRAINED_MAX_INSTANCES = 7
SEED_MAX = 2**64 - 1  # the CPU generator's seed range
STEPS_MAX = 1000
GUIDANCE_MAX = 100.0
OCTREE_DEPTH_MIN, OCTREE_DEPTH_MAX = 2, 10


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise MIDIInputError(f"{what} {value!r}: give a whole number")
    return int(value)


def check_seed(seed) -> int:
    seed = _int(seed, "seed")
    if not 0 <= seed <= SEED_MAX:
        raise MIDIInputError(f"seed {seed}: use 0..{SEED_MAX} (2^64-1)")
    return seed


def check_steps(steps) -> int:
    steps = _int(steps, "steps")
    if not 1 <= steps <= STEPS_MAX:
        raise MIDIInputError(f"steps {steps}: use 1..{STEPS_MAX} (official: 50)")
    return steps


def check_guidance(guidance) -> float:
    g = float(guidance)
    if not math.isfinite(g) or not 0.0 <= g <= GUIDANCE_MAX:
        raise MIDIInputError(f"guidance {guidance!r}: use a number from 0 to {GUIDANCE_MAX:g} "
                             f"(official 7.0; 1 or less turns classifier-free guidance off)")
    return g


def check_octree_depth(depth) -> int:
    depth = _int(depth, "octree_depth")
    if not OCTREE_DEPTH_MIN <= depth <= OCTREE_DEPTH_MAX:
        raise MIDIInputError(f"octree_depth {depth}: use {OCTREE_DEPTH_MIN}..{OCTREE_DEPTH_MAX} "
                             f"(8 = the official 257^3 grid)")
    return depth


def check_max_setting(max_instances, allow_more_instances: bool, what: str = "max_instances",
                      allow: str = "allow_more_instances=True") -> int:
    max_instances = _int(max_instances, what)
    if max_instances < 1:
        raise MIDIInputError(f"{what} must be at least 1, got {max_instances}")
    if max_instances > TRAINED_MAX_INSTANCES and not allow_more_instances:
        raise MIDIInputError(
            f"{what}={max_instances} is above {TRAINED_MAX_INSTANCES}, the most MIDI was trained with: "
            f"lower it, or set {allow} to go beyond (quality may drop, memory grows ~n^2)")
    return max_instances


def warn_beyond_trained(n: int, who: str) -> None:
    if n > TRAINED_MAX_INSTANCES:
        warnings.warn(f"{who}: {n} instances, more than the {TRAINED_MAX_INSTANCES} MIDI was trained with; "
                      f"expect lower quality and more memory", stacklevel=3)


def enforce_count(n: int, max_instances: int, too_many: str, *, none_hint: str, many_hint: str) -> int:
    """SegmentScene: how many instances to keep (the first ones), or a message that says what to change."""
    if n == 0:
        raise MIDIInputError(none_hint)
    if n > max_instances:
        if too_many == "keep_first":
            n = max_instances
        elif too_many == "error":
            raise MIDIInputError(
                f"SegmentScene found {n} objects but max_instances is {max_instances}: {many_hint}, "
                f"raise max_instances (above {TRAINED_MAX_INSTANCES} needs allow_more_instances=True), "
                f"or set too_many='keep_first' to keep the first {max_instances}")
        else:
            raise MIDIInputError(f"too_many must be 'error' or 'keep_first', got {too_many!r}")
    warn_beyond_trained(n, "SegmentScene")
    return n


def check_instance_count(n: int, max_instances: int | None, allow_more_instances: bool, what: str) -> int:
    """CLI: how many of ``n`` instances to keep. No --max-instances: more than 7 is refused (as the
    node refuses it); --max-instances N keeps the first N, as the official order gives them."""
    if n == 0:
        raise MIDIInputError(f"{what}: no instance (all pixels are background 0): give each object a non-zero value")
    if max_instances is None:
        if n > TRAINED_MAX_INSTANCES and not allow_more_instances:
            raise MIDIInputError(
                f"{what} has {n} objects, more than the {TRAINED_MAX_INSTANCES} MIDI was trained with: merge or "
                f"erase objects, pass --max-instances N to keep the first N, or --allow-more-instances")
        return n
    return min(n, max_instances)  # above 7: the encoder's check warns
