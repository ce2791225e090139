"""One exception type for user mistakes: the CLI prints its message on one line, no traceback."""


class WbcError(Exception):
    """A problem the user can fix (bad path, bad file, wrong layout). The message says what to do."""


class BadImage(WbcError):
    """Bytes that are not a readable image (empty, truncated, not an image at all)."""


class ImageTooLarge(BadImage):
    """An image over the pixel limit (decompression bombs included)."""
