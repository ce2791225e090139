"""Corrections close the loop: the verified cells of signed cases become a folder-per-class set, `wbc adapt
--labelled` learns from part of them, and the adapted model becomes the lab's only when it is better on the
verified cells it never saw (issue 14 item 6)."""

from __future__ import annotations

import logging
import random
import shutil
from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from wbc.errors import WbcError
from wbc.infer.answers import NO_WHITE_CELL, UNIDENTIFIED
from wbc.review.cases import REVIEW_ONLY
from wbc.review.db import Case, Cell
from wbc.review.images import resolve

log = logging.getLogger(__name__)
LAB_MODEL = "lab_model.safetensors"


def verified_cells(session, classes: list[str]) -> dict[str, list[tuple[int, str]]]:
    """{class: [(cell id, image)]} of the cells of signed cases (their newest version) whose verified class the
    model knows; UNIDENTIFIED, smudge, artefact and no-white-cell answers teach it nothing."""
    signed = session.scalars(select(Case).where(Case.status == "signed")).all()
    out: dict[str, list] = defaultdict(list)
    skip = {UNIDENTIFIED, NO_WHITE_CELL, *REVIEW_ONLY}
    for case in signed:
        for c in session.scalars(select(Cell).where(Cell.case_id == case.id)):
            if c.current_class in classes and c.current_class not in skip:
                out[c.current_class].append((c.id, c.image))
    return dict(out)


def export_cells(session, data_dir, out: str | Path, classes: list[str], holdout: float = 0.0, seed: int = 0) -> dict:
    """Copy the verified cells into out/train/<class>/ (and out/heldout/<class>/, `holdout` of each class);
    counts per split and class."""
    cells = verified_cells(session, classes)
    if not cells:
        raise WbcError("no verified cells yet: sign cases first (only signed cases teach the model)")
    rng = random.Random(seed)
    counts: dict = {"train": {}, "heldout": {}}
    for cls, items in cells.items():
        items = sorted(items)
        rng.shuffle(items)
        n_held = int(round(len(items) * holdout)) if len(items) >= 4 else 0
        for k, (cid, image) in enumerate(items):
            split = "heldout" if k < n_held else "train"
            dest = Path(out) / split / cls / f"cell{cid}{Path(image).suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(resolve(data_dir, image), dest)
            counts[split][cls] = counts[split].get(cls, 0) + 1
    return counts


def adapt_from_reviews(session, data_dir, model_path: str | Path, work: str | Path, holdout: float = 0.3) -> dict:
    """Adapt `model_path` on the verified cells (train part), measure before/after on the held-out part, and
    install the result as the lab's model (data_dir/lab_model.safetensors) only when it is more accurate."""
    from wbc.infer.predictor import load_model
    from wbc.training.adapt import adapt

    classes = load_model(model_path).classes
    counts = export_cells(session, data_dir, work, classes, holdout)
    if not counts["heldout"]:
        raise WbcError("too few verified cells to hold any out (4 a class at least): sign more cases first")
    train = Path(work) / "train"
    candidate = Path(work) / "adapted.safetensors"
    report = adapt(model_path, str(train), candidate, labelled=str(train), heldout=str(Path(work) / "heldout"))
    before, after = report["heldout_before"]["accuracy"], report["heldout_after"]["accuracy"]
    installed = after > before
    if installed:
        shutil.copyfile(candidate, Path(data_dir) / LAB_MODEL)
    log.info(f"verified held-out cells: {before:.3f} before, {after:.3f} after; " + ("installed" if installed else "kept the old model"))
    return {"counts": counts, "before": before, "after": after, "installed": installed,
            "lab_model": str(Path(data_dir) / LAB_MODEL) if installed else None}


def agreement(session) -> dict:
    """Over the newest signed version of every case: per class, how often the model's pre-classification was
    kept (sensitivity: of the cells finally that class, the share the model called so; predictive value: of
    the cells the model called that class, the share that stayed) -- the lab's own evidence of how far to trust it."""
    pairs = [(c.model_class, c.current_class) for case in session.scalars(select(Case).where(Case.status == "signed"))
             for c in session.scalars(select(Cell).where(Cell.case_id == case.id))]
    classes = sorted({x for p in pairs for x in p})
    rows = []
    for k in classes:
        final = sum(f == k for _, f in pairs)
        called = sum(m == k for m, _ in pairs)
        both = sum(m == k and f == k for m, f in pairs)
        rows.append({"class": k, "final": final, "called": called, "agreed": both,
                     "sensitivity": both / final if final else None, "predictive_value": both / called if called else None})
    kept = sum(m == f for m, f in pairs)
    return {"cells": len(pairs), "kept": kept, "accepted_share": kept / len(pairs) if pairs else None, "per_class": rows}
