"""Exception types: one family so callers can catch every streamcomp failure at once."""


class StreamcompError(Exception):
    """Base class of every error streamcomp raises on purpose."""


class InputError(StreamcompError, ValueError):
    """The user's input (path, option, array) cannot be used; the message says what to do."""


class ChunkFormatError(StreamcompError, ValueError):
    """Chunk bytes are truncated, corrupted, foreign, or from a format this build cannot read."""
