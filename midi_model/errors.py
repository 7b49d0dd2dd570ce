"""Errors a user can cause. Each message names the input and what to do about it."""


class MIDIError(ValueError):
    """Base class: one clear, one-line message for the user."""


class MIDILoadError(MIDIError):
    """A model folder or weight file cannot be loaded as asked."""


class MIDIInputError(MIDIError):
    """An image, mask, seg map or setting cannot be used as given."""
