"""One exception type for user mistakes: the CLI prints its message on one line, no traceback."""


class WbcError(Exception):
    """A problem the user can fix (bad path, bad file, wrong layout). The message says what to do."""
