"""Validation cells (240 Kaggle, 240 PBC, 119 Munich; `low_resolution.validation_sets`) through other cameras (each
channel its own gamma and gain, `camera_SEED` of wbc.data.shifts): accuracy, the answers left unflagged, how many of
them are right, and the unflagged wrong ones (truth, answer, probability). Each source as one folder (the run's scale
and the run checks, as `wbc predict DIR`), or with `--alone` each image as a user's single image.

    python scripts/cell_cameras.py [--shifts none,camera_1,...,camera_8] [--alone] [--out reports/cell_cameras.json]

No test split is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from low_resolution import validation_sets

from wbc._util.io import atomic_write_text
from wbc.data.shifts import shifted_field
from wbc.image.decode import decode
from wbc.image.framing import run_scale
from wbc.infer.predictor import fastest, load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shifts", default="none," + ",".join(f"camera_{k}" for k in range(1, 9)))
    ap.add_argument("--alone", action="store_true", help="each image alone, not each source as one folder")
    ap.add_argument("--out", type=Path, default=Path("reports/cell_cameras.json"))
    a = ap.parse_args()
    p = fastest(load_model(None))
    sets = validation_sets()
    out = {}
    for how in a.shifts.split(","):
        for name, cells in sets.items():
            ims = [shifted_field(decode(path), how)[0] for path, _ in cells]
            answers = [p.predict(im)[0] for im in ims] if a.alone else p.predict(ims, px_per_um=run_scale(ims))
            right = np.array([x.label == t for x, (_, t) in zip(answers, cells)])
            free = np.array([not x.review for x in answers])
            wrong = [(t, x.label, round(x.probability, 3)) for x, (_, t), f, r in zip(answers, cells, free, right) if f and not r]
            out[f"{how}/{name}"] = {"cells": len(cells), "accuracy": float(right.mean()), "unflagged": int(free.sum()),
                                    "unflagged_right": int(right[free].sum()), "unflagged_wrong": wrong}
            print(f"{how:10} {name:7} {right.mean():6.1%} right, {free.sum():3} of {len(cells)} unflagged, {right[free].sum()} right {wrong}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps({"alone": a.alone, "rows": out}, indent=1))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
