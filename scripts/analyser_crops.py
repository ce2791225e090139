"""Another lab's analyser crops, simulated: what `wbc predict` on such a folder gets right (issue 17 item 4).

    python scripts/analyser_crops.py [--per-class 15] [--out reports/analyser_crops.json]

PBC train cells of six types (15 a type, drawn with seed 0), each cut tight (`wbc.data.shifts`: a square 1.5x the
stained extent, no whole red cell left), shrunk to 120x120 and given a yellow cast: the 120x120 crops with the cell
filling the frame and a yellowish background that issue 17 describes. The folder goes through `wbc predict` as a user
runs it (run scale and all); the script reports accuracy, how the scale was known, the median scale (the truth is
about 7 px/um) and the unflagged answers. No validation or test split is read.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from wbc._util.io import atomic_write_text
from wbc.data.shifts import shifted
from wbc.image.decode import decode

TYPES = ("BASOPHIL", "EOSINOPHIL", "IG", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def write_crops(pbc: Path, folder: Path, per_class: int) -> None:
    rng = random.Random(0)
    for cls in TYPES:
        for f in rng.sample(sorted((pbc / "train" / cls).glob("*.jpg")), per_class):
            crop = cv2.resize(shifted(decode(f), "tight_crop"), (120, 120), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{cls}__{f.stem}.png"), cv2.cvtColor(shifted(crop, "yellow"), cv2.COLOR_RGB2BGR))


def summary(rows: list[dict]) -> dict:
    right = [Path(r["path"]).name.split("__")[0] == r["class"] for r in rows]
    unflagged = [r["review"] in ("0", "False", "false") for r in rows]
    return {"cells": len(rows), "accuracy": round(float(np.mean(right)), 4), "scale": dict(Counter(r["scale"] for r in rows)),
            "px_per_um_median": round(float(np.median([float(r["px_per_um"]) for r in rows])), 3),
            "unflagged": sum(unflagged), "unflagged_right": sum(r for r, u in zip(right, unflagged) if u)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pbc", type=Path, default=Path("../shared/data/pbc"))
    ap.add_argument("--per-class", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("reports/analyser_crops.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, table = Path(tmp) / "crops", Path(tmp) / "out.csv"
        folder.mkdir()
        write_crops(a.pbc, folder, a.per_class)
        subprocess.run([sys.executable, "-m", "wbc", "predict", str(folder), "--out", str(table)], check=True)
        with open(table, newline="") as f:
            out = summary(list(csv.DictReader(f)))
    atomic_write_text(a.out, json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
