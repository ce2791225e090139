"""One exception type for user mistakes: the CLI prints its message on one line, no traceback."""


class WbcError(Exception):
    """A problem the user can fix (bad path, bad file, wrong layout). The message says what to do."""


class BadImage(WbcError):
    """Bytes that are not a readable image (empty, truncated, not an image at all)."""


class ImageTooLarge(BadImage):
    """An image over the pixel limit (decompression bombs included)."""


def check_ranges(*rules: tuple[str, object, bool, str]) -> None:
    """Options in their ranges before anything loads; each rule `(option, value, ok, what it takes)`, the first
    broken one a WbcError ("--batch-size must be at least 1, not 0"): a zero or negative count failed deep in a
    run, or, as a share, silently meant something else."""
    for option, value, ok, want in rules:
        if not ok:
            raise WbcError(f"{option} must be {want}, not {value}")
