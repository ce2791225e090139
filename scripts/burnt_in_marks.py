"""Marks a microscope camera burns into its pictures: a scale bar (10 um, with its label), a timestamp line, both;
black, white or yellow, as camera software draws them.

    python scripts/burnt_in_marks.py [--out reports/burnt_in_marks.json]

Validation cells (every other of `low_resolution.validation_sets`: 120 Kaggle, 120 PBC, 60 Munich; never a test
split) go through `predict` as one run each, unmarked and marked. Per mark: accuracy, answers that changed class
(and how many of those were unflagged), "no white cell" answers, the unflagged share and how many of those are right,
and the median scale measured over the unmarked one's (a bar is a straight dark edge, not a red cell).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from low_resolution import validation_sets

import wbc
from wbc._util.io import atomic_write_text
from wbc.image.decode import decode
from wbc.infer.predictor import NO_WHITE_CELL

MARKS = ("black_bar", "white_bar", "yellow_bar", "black_text", "white_text", "yellow_bar_text")
COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "yellow": (255, 230, 0)}


def marked(rgb: np.ndarray, how: str, px_per_um: float) -> np.ndarray:
    """`rgb` with a 10 um scale bar (0.8 um thick, labelled) at its lower right and/or a timestamp at its upper left."""
    out, (h, w) = rgb.copy(), rgb.shape[:2]
    colour = COLOURS[how.split("_")[0]]
    if "bar" in how:
        length, thick = int(10 * px_per_um), max(2, int(0.8 * px_per_um))
        x1, y1 = w - int(0.05 * w), h - int(0.06 * h)
        cv2.rectangle(out, (x1 - length, y1 - thick), (x1, y1), colour, -1)
        cv2.putText(out, "10 um", (x1 - length, y1 - thick - 4), cv2.FONT_HERSHEY_SIMPLEX, max(0.3, w / 900), colour, 1, cv2.LINE_AA)
    if "text" in how:
        cv2.putText(out, "2026-11-30 14:22:07 100x", (4, int(0.06 * h) + 6), cv2.FONT_HERSHEY_SIMPLEX, max(0.3, w / 700), colour,
                    max(1, w // 400), cv2.LINE_AA)
    return out


def figures(answers, base, truth) -> dict:
    right = np.array([a.label == t for a, t in zip(answers, truth)])
    unflagged = np.array([not a.review for a in answers])
    changed = [a.label != b.label for a, b in zip(answers, base)]
    return {"accuracy": round(float(right.mean()), 3), "changed": int(sum(changed)),
            "changed_unflagged": int(sum(c and not a.review for c, a in zip(changed, answers))),
            "no_white_cell": sum(a.label == NO_WHITE_CELL for a in answers),
            "no_white_cell_unflagged": sum(a.label == NO_WHITE_CELL and not a.review for a in answers),
            "unflagged": int(unflagged.sum()), "unflagged_right": int(right[unflagged].sum()),
            "scale_ratio": round(float(np.median([a.px_per_um / b.px_per_um for a, b in zip(answers, base)])), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/burnt_in_marks.json"))
    a = ap.parse_args()
    model, table = wbc.load_model(), {}
    for name, cells in validation_sets().items():
        cells, truth = cells[::2], [c for _, c in cells[::2]]
        images = [decode(p) for p, _ in cells]
        base = model.predict(images)
        table[name] = {"none": figures(base, base, truth)}
        for how in MARKS:
            row = table[name][how] = figures(model.predict([marked(im, how, b.px_per_um) for im, b in zip(images, base)]), base, truth)
            print(f"{name:7s} {how:16s} {row}", flush=True)
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
