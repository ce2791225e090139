"""Run folders shared by every trainer: one config, a checkpoint per epoch, `--resume` or a fresh start."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

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
