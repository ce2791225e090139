"""What the terminal shows: the one console (stderr), progress bars, tables, and library log records.

Library modules log with `logging.getLogger(__name__)`; `log_to_console` routes the `wbc` records
to this console, so a command's messages read as before while a Python caller sees none of them.
Tables keep readable columns when the output is not a terminal (a pipe, a file, CI): they are
drawn at least `MIN_WIDTH` characters wide instead of wrapping one character a column.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.markup import escape  # noqa: F401  (user text inside our markup: a file named "cell[red].jpeg")
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

MIN_WIDTH = 160  # columns a table gets when the output is not a terminal


def _console() -> Console:
    c = Console(stderr=True)
    if not c.is_terminal and c.width < MIN_WIDTH:
        c = Console(stderr=True, width=MIN_WIDTH)
    return c


console = _console()


def bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def table(title: str | None, columns: list[str], left: tuple[str, ...] = ()) -> Table:
    """A table with these columns; numbers right-aligned, the `left` ones (names, paths) left."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right")
    return t


class _ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else None
        console.print(record.getMessage(), style=style, highlight=False, markup=False, soft_wrap=True)


def log_to_console(level: int = logging.INFO) -> None:
    """Show the `wbc` package's log records on the console, once."""
    log = logging.getLogger("wbc")
    if not any(isinstance(h, _ConsoleHandler) for h in log.handlers):
        log.addHandler(_ConsoleHandler())
    log.setLevel(level)
    log.propagate = False
