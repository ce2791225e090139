"""Cells that fill the frame (an analyser's crop, issue 17 item 4): what the scale, the answer and the flag do.
The model's own validation cells, cut as `wbc.data.shifts.shifted(..., "tight_crop")` (a square 1.5x the stained
extent around the cell, no whole red cell left). No test split is read.

    python scripts/tight_crops.py [MODEL] [--per-class 20] [--out reports/tight_crops.json]

Per source: how the scale was known (red cells found in the crop's fragments, or the stained cell), the measured
scale against the source's true one, and balanced accuracy (UNIDENTIFIED counted wrong), the share unflagged
and UNIDENTIFIED, with the scale as framed and with the true scale given: each crop sent alone, as a user's single
image (the per-cell framing and flags). `as_one_run`: the same crops sent as one batch, where the run-level checks
(the lab's colours, blasts in the run) may flag every answer; its share unflagged and the run's commonest reasons.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from colour_constancy import val_cells

from wbc._util.io import atomic_write_text
from wbc.data.shifts import shifted
from wbc.image.decode import decode
from wbc.infer.answers import UNIDENTIFIED, reason_kinds
from wbc.infer.predictor import load_model, shipped_model_path
from wbc.training.metrics import balanced


def summary(preds: list, cells: list, classes: list[str]) -> dict:
    y = np.array([classes.index(r.label) for r, _ in cells])
    p = np.array([classes.index(x.label) if x.label in classes else -1 for x in preds])
    kept = np.array([not x.review for x in preds])
    return {"balanced_accuracy": round(balanced(y, p), 4), "unflagged": round(float(kept.mean()), 4),
            "unflagged_right": round(float((p == y)[kept].mean()), 4) if kept.any() else None,
            "unidentified": round(float(np.mean([x.label == UNIDENTIFIED for x in preds])), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(shipped_model_path()))
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("reports/tight_crops.json"))
    a = ap.parse_args()
    model = load_model(a.model)
    cells = val_cells(model, a.per_class)
    crops = [shifted(decode(r.path), "tight_crop") for r, _ in cells]
    framed = [model.predict(c)[0] for c in crops]
    given = [model.predict(c, px_per_um=px)[0] for c, (_, px) in zip(crops, cells)]
    run = model.predict(crops)
    table = {}
    for src in sorted({r.source for r, _ in cells}):
        idx = [i for i, (r, _) in enumerate(cells) if r.source == src]
        sub = [cells[i] for i in idx]
        ratio = [framed[i].px_per_um / cells[i][1] for i in idx if framed[i].scale == "measured"]
        table[src] = {"cells": len(idx), "scale": {k: sum(framed[i].scale == k for i in idx) for k in ("measured", "cell", "assumed")},
                      "measured_over_true_p10_p50_p90": np.percentile(ratio, [10, 50, 90]).round(2).tolist() if ratio else None,
                      "as_framed": summary([framed[i] for i in idx], sub, model.classes),
                      "true_scale_given": summary([given[i] for i in idx], sub, model.classes),
                      "as_one_run": {"unflagged": round(float(np.mean([not run[i].review for i in idx])), 4),
                                     "reasons": Counter(k for i in idx for k in reason_kinds(run[i].review_reason)).most_common(3)}}
        print(src, json.dumps(table[src]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps({"model": str(a.model), "table": table}, indent=1))


if __name__ == "__main__":
    main()
