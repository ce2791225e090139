"""A labelled folder-per-class set mapped onto a model's classes (evaluate, adapt, export checks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wbc.data.scan import scan
from wbc.errors import WbcError


@dataclass
class Labelled:
    paths: list[Path]
    y: np.ndarray  # index into the model's classes
    skipped_bad: int
    ignored_unknown: int
    unknown: dict[str, list[Path]] | None = None  # images of class folders the model lacks, by folder name


def match_classes(data: str, split: str | None, classes: list[str], ignore_unknown: bool, progress=None, check: bool = True) -> Labelled:
    """Images of one split (None: every image of the tree) with labels mapped (case-insensitively) onto the
    model's classes. A class folder the model does not know is an error unless `ignore_unknown`."""
    s = scan(data, progress=progress, check=check)
    recs = s.split(split) if split else s.records
    split = split or "ALL"
    known = {c.upper(): i for i, c in enumerate(classes)}
    unknown = sorted({r.label for r in recs} - set(known))
    if unknown and not ignore_unknown:
        raise WbcError(f"{data}: class folder(s) {', '.join(unknown)} in {split} are not classes of this model "
                       f"({', '.join(classes)}): rename them or pass --ignore-unknown")
    kept = [r for r in recs if r.label in known]
    if not kept:
        raise WbcError(f"no images of the model's classes in split {split} of {data}")
    bad = sum(1 for b in s.bad if f"/{split.upper()}/" in b.path.as_posix().upper() or split.upper() == "ALL")
    others: dict[str, list[Path]] = {}
    for r in recs:
        if r.label not in known:
            others.setdefault(r.label, []).append(r.path)
    return Labelled([r.path for r in kept], np.array([known[r.label] for r in kept]), bad, len(recs) - len(kept), others)
