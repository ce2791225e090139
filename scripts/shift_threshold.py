"""Does a review threshold fitted on validation cells *under colour shifts* keep the unflagged answers right
under those shifts? The model's own validation cells (40 a class and source, as in colour_constancy.py) under
every shift of wbc.data.shifts; the threshold (unflagged cells `--target` right) is fitted on half the cells
(home only, or home and shifted pooled) and measured on the other half, both ways. No test split is read.

    python scripts/shift_threshold.py MODEL [--cache runs/shift_threshold.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from colour_constancy import SHIFTS, val_cells
from selective import lowest_threshold

from wbc.data.shifts import shifted
from wbc.image.decode import decode
from wbc.infer.predictor import load_model

SOURCES = ("kaggle", "pbc", "munich")


def score(model: str, cache: Path) -> list:
    """One record a cell and shift: shift, source, half, probability, right, flagged for a reason besides confidence."""
    if cache.is_file():
        return json.loads(cache.read_text())
    predictor = load_model(model)
    cells = val_cells(predictor, 40)
    images = [decode(r.path) for r, _ in cells]
    records = []
    for how in SHIFTS:
        for i, (img, (r, px)) in enumerate(zip(images, cells)):
            p = predictor.predict(shifted(img, how), px_per_um=px)[0]
            other = (bool(p.review_reason) and "low confidence" not in p.review_reason) or p.label not in predictor.classes
            records.append((how, r.source, i % 2, p.probability, p.label == r.label, other))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(records))
    return records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--cache", type=Path, default=Path("runs/shift_threshold.json"))
    ap.add_argument("--target", type=float, default=0.98)
    a = ap.parse_args()
    rec = score(a.model, a.cache)
    how, src, half = (np.array([r[i] for r in rec]) for i in range(3))
    conf = np.array([-1.0 if r[5] else r[3] for r in rec])  # flagged for distance or scale: never unflagged
    right = np.array([r[4] for r in rec], float)
    for fit in ("home", "home and shifted"):
        print(f"threshold fitted on {fit} cells (unflagged share, and how many of them right, on the other half):")
        for h in SHIFTS:
            row = {}
            for s in SOURCES:
                vals = []
                for f in (0, 1):
                    m = (half == f) & ((how == "none") if fit == "home" else True)
                    t = lowest_threshold(conf[m], right[m], a.target)
                    e = (half != f) & (how == h) & (src == s)
                    kept = e & (conf >= t)
                    vals.append((kept.sum() / e.sum(), right[kept].mean() if kept.any() else np.nan))
                share, acc = np.nanmean(vals, 0)
                row[s] = f"{share:.0%} ({acc:.1%})"
            print(f"  {h:20s}", "  ".join(f"{s} {v}" for s, v in row.items()))


if __name__ == "__main__":
    main()
