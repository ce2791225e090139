"""Leakage-free split manifest: groups of copies never straddle train and validation."""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wbc._util.io import atomic_write_text, sha256
from wbc.data.groups import group_images
from wbc.data.scan import Scan, find_layout
from wbc.errors import WbcError, check_ranges

FIELDS = ["path", "class", "group", "split", "source_split"]
TRAIN_SPLITS = ("TRAIN", "ALL")


@dataclass
class ManifestRow:
    path: str  # relative to the dataset root in the CSV; resolved when read with `data`
    label: str
    group: str
    split: str  # train | val | overlap (train copies of a tested cell) | test | test_simple | ...
    source_split: str


def check_val_fraction(val_fraction: float) -> None:
    """A share of the TRAIN groups: 2 would have held out half of them (two folds), 0 none."""
    check_ranges(("--val-fraction", val_fraction, 0 < val_fraction < 1, "above 0 and below 1 (such as 0.2)"))


def make_manifest(scan: Scan, val_fraction: float = 0.2, seed: int = 0, progress=None) -> list[ManifestRow]:
    """Group every image (all splits together, so cross-split copies show) and split TRAIN by group."""
    check_val_fraction(val_fraction)  # before the grouping's minutes
    recs = scan.records
    groups = group_images([r.path for r in recs], [r.label for r in recs], progress=progress)
    rows = []
    train_idx = [i for i, r in enumerate(recs) if r.split in TRAIN_SPLITS]
    if not train_idx:
        raise WbcError(f"no TRAIN split under {scan.root}: need TRAIN/<class>/ or <class>/ folders")
    n_folds = max(2, round(1 / val_fraction))
    y = [recs[i].label for i in train_idx]
    g = [groups[i] for i in train_idx]
    if len(set(g)) < n_folds:
        raise WbcError(f"only {len(set(g))} source groups in TRAIN: too few to hold out a validation split")
    # imported here: at the top its 2.4 s would delay every command's first answer (wbc train's checks read this module)
    from sklearn.model_selection import StratifiedGroupKFold

    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    _, val_pos = next(sgkf.split(np.zeros(len(y)), y, g))
    val = {train_idx[p] for p in val_pos}
    for i, r in enumerate(recs):
        if r.split in TRAIN_SPLITS:
            split = "val" if i in val else "train"
        else:
            split = r.split.lower()
        rows.append(ManifestRow(r.path.relative_to(scan.root).as_posix(), r.label, groups[i], split, r.split))
    return exclude_overlap(rows)


def exclude_overlap(rows: list[ManifestRow]) -> list[ManifestRow]:
    """TRAIN copies of a source cell that is also in a test split are kept out of train and val
    (split 'overlap'), so the test splits stay unseen (the Kaggle set re-photographed a few cells)."""
    tested = {r.group for r in rows if r.source_split not in TRAIN_SPLITS}
    for r in rows:
        if r.split in ("train", "val") and r.group in tested:
            r.split = "overlap"
    return rows


def write_manifest(rows: list[ManifestRow], path: str | os.PathLike) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(FIELDS)
    for r in rows:
        w.writerow([r.path, r.label, r.group, r.split, r.source_split])
    atomic_write_text(path, buf.getvalue())


def read_manifest(path: str | os.PathLike, data: str | os.PathLike | None = None) -> list[ManifestRow]:
    """Rows of a manifest; paths (stored relative to the dataset root) are resolved under `data`."""
    path = Path(path)
    root = find_layout(data)[0] if data else Path()
    if not path.is_file():
        raise WbcError(f"split manifest not found: {path} (make one with `wbc data split`)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(FIELDS) <= set(reader.fieldnames):
            raise WbcError(f"{path} is not a wbc split manifest (columns {', '.join(FIELDS)} expected)")
        return [ManifestRow(str(root / r["path"]), r["class"], r["group"], r["split"], r["source_split"]) for r in reader]


def manifest_hash(path: str | os.PathLike) -> str:
    return sha256(path)


def summary(rows: list[ManifestRow]) -> tuple[dict, list[str]]:
    """({split: {class: (groups, images)}}, groups seen in more than one source split)."""
    groups: dict = defaultdict(lambda: defaultdict(set))
    images: dict = defaultdict(Counter)
    where: dict[str, set] = defaultdict(set)
    for r in rows:
        groups[r.split][r.label].add(r.group)
        images[r.split][r.label] += 1
        where[r.group].add(r.source_split)
    table = {s: {c: (len(groups[s][c]), images[s][c]) for c in groups[s]} for s in groups}
    crossing = sorted(g for g, s in where.items() if len(s & {"TRAIN", "ALL"}) and len(s - {"TRAIN", "ALL"}))
    return table, crossing
