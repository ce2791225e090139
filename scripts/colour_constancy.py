"""Does white-balancing the input (the background made neutral, wbc.image.stain.neutral_background) before the
model make its answers hold under other labs' colours? Measured on the model's own validation cells, as they
are and under the colour shifts of wbc.data.shifts, with and without the balance. No test split is read.

    python scripts/colour_constancy.py [MODEL] [--per-class 40] [--out reports/colour_constancy.json] [--as-is-only]

The scale is each source's (as in training), so only colour differs between the two columns.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from wbc._util.io import atomic_write_text
from wbc.data.shifts import shifted
from wbc.data.sources import load_rows, parse_sources
from wbc.image.decode import decode
from wbc.image.stain import neutral_background
from wbc.infer.predictor import load_model, shipped_model_path
from wbc.training.metrics import balanced

SHIFTS = ("none", "yellow", "cyan", "grey_background", "red_purple_nucleus")


def val_cells(predictor, per_class: int) -> list:
    return split_cells(predictor, per_class, "val", 0)


def split_cells(predictor, per_class: int, split: str, seed: int) -> list:
    """(row, its source's px/um) of up to `per_class` cells of each source's class in the model's own `split`."""
    conf = predictor.meta["info"]["config"]
    with tempfile.TemporaryDirectory() as tmp:
        rows, infos = load_rows(parse_sources(conf["data"], conf["manifest"]), Path(tmp), conf["val_fraction"], conf["seed"])
    by = defaultdict(list)
    for r in rows:
        if r.split == split:
            by[(r.source, r.label)].append(r)
    rng = random.Random(seed)
    out = []
    for k in sorted(by):
        out += [(r, infos[r.source].px_per_um) for r in rng.sample(by[k], min(per_class, len(by[k])))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(shipped_model_path()))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("reports/colour_constancy.json"))
    ap.add_argument("--as-is-only", action="store_true", help="skip the '+balance' columns (a model that balances the whole image itself)")
    a = ap.parse_args()
    predictor = load_model(a.model)
    cells = val_cells(predictor, a.per_class)
    classes = predictor.classes
    images = [decode(r.path) for r, _ in cells]
    table: dict = {}
    for how in SHIFTS:
        for balance in (False,) if a.as_is_only else (False, True):
            preds = []
            for img, (r, px) in zip(images, cells):
                x = shifted(img, how)
                if balance:
                    x = neutral_background(x)
                preds.append(predictor.predict(x, px_per_um=px)[0])
            row = {}
            for src in sorted({r.source for r, _ in cells}):
                idx = [i for i, (r, _) in enumerate(cells) if r.source == src]
                y = np.array([classes.index(cells[i][0].label) for i in idx])
                p = np.array([classes.index(preds[i].label) if preds[i].label in classes else -1 for i in idx])
                kept = np.array([not preds[i].review for i in idx])
                row[src] = {"balanced_accuracy": round(balanced(y, p), 4), "unflagged": round(float(kept.mean()), 4),
                            "unflagged_right": round(float((p == y)[kept].mean()), 4) if kept.any() else None}
            table[f"{how}{' +balance' if balance else ''}"] = row
            print(how, "balanced" if balance else "as is", json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps({"model": str(a.model), "cells": len(cells), "table": table}, indent=1))


if __name__ == "__main__":
    main()
