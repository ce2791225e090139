"""A greyscale camera or a grey export: validation cells made grey, read as a user's images.

    python scripts/greyscale.py [--out reports/greyscale.json]

Validation cells (240 Kaggle, 240 PBC, 120 Munich; the shipped split manifests, never a test split) turned grey (the
mean of the three channels), read as a user's images: accuracy, and the share left unflagged and how many of those are
right, without the greyscale reason and with it (as shipped); the cells answered "no white cell" and how many of those
without a flag; and how many of the same cells in colour are called greyscale (none should be). Kaggle's validation
cells are augmented copies: the black fill of a rotated copy reads as a dark nucleus in grey, so they are dropped far
less often than its unaugmented originals (TEST_SIMPLE in grey: 65 of 71).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from low_resolution import validation_sets, with_and_without

import wbc
from wbc._util.io import atomic_write_text
from wbc.image.decode import decode
from wbc.image.stain import is_greyscale
from wbc.infer.predictor import NO_WHITE_CELL


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/greyscale.json"))
    a = ap.parse_args()
    sets = validation_sets()
    model, table = wbc.load_model(), {}
    for name, cells in sets.items():
        images, truth = [decode(p) for p, _ in cells], [c for _, c in cells]
        grey = [np.repeat(im.mean(2, keepdims=True), 3, 2).round().astype(np.uint8) for im in images]
        answers = model.predict(grey)
        dropped = [a for a in answers if a.label == NO_WHITE_CELL]
        row = table[name] = {"colour_called_grey": sum(map(is_greyscale, images)), "dropped": len(dropped),
                             "dropped_silently": sum(not a.review for a in dropped), **with_and_without(answers, truth, "greyscale image")}
        print(f"{name:7s} {row}", flush=True)
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
