"""Run folders shared by every trainer: one config, a checkpoint per epoch, `--resume` or a fresh start."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, TypeVar

from wbc._util.io import atomic_write_text
from wbc.errors import WbcError

C = TypeVar("C")


def open_run(out: str, cfg: C, resume: bool, load: Callable[[Path], C]) -> tuple[Path, C]:
    """(run folder, the config to use): a resumed run's own saved config, else `cfg`; never overwrite a run by accident."""
    run = Path(out)
    ckpt = run / "last.pt"
    if resume:
        if not ckpt.is_file():
            raise WbcError(f"nothing to resume in {run}: no last.pt (start without --resume)")
        cfg = load(run / "config.json")
    elif ckpt.exists():
        raise WbcError(f"{run} already holds a run: pass --resume to continue it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    return run, cfg


def keep_logged(path: Path, done: Callable[[dict], bool]) -> None:
    """On resume, keep only the metrics rows of epochs the checkpoint holds (`done`); a kill between an
    epoch's row and its checkpoint would otherwise log that epoch twice once it is redone, and a row
    torn mid-write (fields missing) goes too."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if None not in r.values() and done(r)]
    if len(kept) < len(rows):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fields, lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
        atomic_write_text(path, buf.getvalue())


def epoch_number(value: str | None) -> int:
    """An epoch or round column's value (a large number for an unreadable one, so it is not kept)."""
    return int(value) if value and value.isdigit() else 10**9
