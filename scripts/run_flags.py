"""How often a whole run is judged (every answer flagged for review): far from every training source, or holding
blasts (wbc.infer.predictor.LabCheck). Measured on the model's own validation cells, each source as one run, as it
is and under the colour shifts of wbc.data.shifts; then, for the record, on the test splits as `wbc predict` takes
a folder. The run-level thresholds were chosen on validation; the test splits are only reported.

    python scripts/run_flags.py [MODEL] [--per-class 60] [--out reports/run_flags.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from colour_constancy import split_cells

from wbc._util.io import atomic_write_text
from wbc.data.shifts import shifted
from wbc.image.decode import decode
from wbc.image.framing import run_scale
from wbc.infer.predictor import (
    NO_WHITE_CELL,
    fastest,
    lab_check,
    load_model,
    shipped_model_path,
)

SHIFTS = ("none", "yellow", "cyan", "grey_background", "red_purple_nucleus")
TEST = {"kaggle_test": "blood-cells/dataset2-master/images/TEST", "pbc_test": "pbc/test", "munich_test": "munich-aml/test"}


def judged(predictor, images: list, labels: list[str]) -> dict:
    """One run's judgement, and how many of its cells the run's flag alone leaves no longer unflagged."""
    answers = predictor.predict(images, px_per_um=run_scale(images))
    lab = lab_check(predictor, answers)
    lab.judge()
    own = [a for a in answers if a.label != NO_WHITE_CELL and not (a.review_reason or "").replace(lab.reason(), "").strip("; ")]
    return {"cells": len(answers), "unlike_share": round(lab.share or 0, 4), "blasts": lab.blasts,
            "blasts_in_truth": sum(k == "BLAST" for k in labels), "far": lab.fired, "blast_run": lab.blast_fired,
            "unflagged_by_own_flags": len(own) if (lab.fired or lab.blast_fired) else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(shipped_model_path()))
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("reports/run_flags.json"))
    a = ap.parse_args()
    predictor = fastest(load_model(a.model))
    by = defaultdict(list)
    for row, _ in split_cells(predictor, a.per_class, "val", 0):
        by[row.source].append(row)
    out: dict = {"model": a.model, "validation": {}, "test": {}}
    for source, rows in sorted(by.items()):
        rgbs = [decode(r.path) for r in rows]
        for how in SHIFTS:
            out["validation"][f"{source}/{how}"] = r = judged(predictor, [shifted(x, how) for x in rgbs], [r.label for r in rows])
            print(source, how, r, flush=True)
    for name, rel in TEST.items():
        files = sorted(p for p in (a.data / rel).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith("."))
        out["test"][name] = r = judged(predictor, [str(f) for f in files], [f.parent.name for f in files])
        print(name, r, flush=True)
    atomic_write_text(a.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
