"""How many instances a scene may have, and the messages when it has none or too many."""
from __future__ import annotations

import warnings

from ..errors import MIDIInputError

#: MIDI was trained (and evaluated) with at most 7 instances per scene.
TRAINED_MAX_INSTANCES = 7


def check_max_setting(max_instances: int, allow_more_instances: bool) -> int:
    max_instances = int(max_instances)
    if max_instances < 1:
        raise MIDIInputError(f"max_instances must be at least 1, got {max_instances}")
    if max_instances > TRAINED_MAX_INSTANCES and not allow_more_instances:
        raise MIDIInputError(
            f"max_instances={max_instances} is above {TRAINED_MAX_INSTANCES}, the most MIDI was trained with: "
            f"lower it, or set allow_more_instances=True to go beyond (quality may drop, memory grows ~n^2)")
    return max_instances


def enforce_count(n: int, max_instances: int, too_many: str, *, none_hint: str, many_hint: str) -> int:
    """Returns how many instances to keep (the first ones), or raises a message that says what to change."""
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
    if n > TRAINED_MAX_INSTANCES:
        warnings.warn(
            f"SegmentScene: {n} instances, more than the {TRAINED_MAX_INSTANCES} MIDI was trained with; "
            f"expect lower quality and more memory", stacklevel=3)
    return n
