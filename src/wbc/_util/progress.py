"""Progress reporting for library code: it is told a progress object by its caller and never draws one.

The CLI passes a Rich progress bar (wbc.cli.render.bar); a Python caller passes nothing and
gets `NullProgress`, which accepts the same calls and shows nothing. Messages go to `logging`.
"""

from __future__ import annotations


class NullProgress:
    """Rich Progress's interface (the part wbc uses), doing nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str = "", total: float | None = None, **fields) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        return None

    def update(self, task: int, **fields) -> None:
        return None

    def remove_task(self, task: int) -> None:
        return None


def or_null(progress):
    """The caller's progress object, or one that shows nothing."""
    return progress if progress is not None else NullProgress()
