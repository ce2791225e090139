"""Where a smear's "no white cell" stops being trusted for its colours (`wbc.infer.predictor.NO_CELL_COLOUR_LIMIT`).

    python scripts/no_cell_colours.py [--out reports/no_cell_colours.json]

Two sets, each image sent alone (a single image has no run to judge its colours): the model's validation cells saved
with red and blue swapped (an export slip: OpenCV's BGR written as RGB; 240 Kaggle, 240 PBC, 119 Munich, the shipped
manifests), and 163 windows of red cells only from BCCD train fields under every colour shift of `wbc.data.shifts`.
Prints, per set, the "no white cell" answers on a smear (red cells measured), how many carry no flag, and their view's
colour distance to the training sources. No test split is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from grey_platelets import red_cell_windows
from low_resolution import validation_sets

from wbc._util.io import atomic_write_text
from wbc.data.locate import resolve_bccd
from wbc.data.shifts import SHIFTS, shifted
from wbc.image.decode import decode
from wbc.image.framing import SMEAR_SCALES
from wbc.infer.predictor import NO_WHITE_CELL, fastest, load_model


def dropped(model, images: list) -> dict:
    """{index: answer} of the "no white cell" answers on a smear among `images`, each predicted alone."""
    answers = [model.predict([im])[0] for im in images]
    return {i: a for i, a in enumerate(answers) if a.label == NO_WHITE_CELL and a.scale in SMEAR_SCALES}


def summary(answers: dict, names: list | None = None) -> dict:
    d = sorted(a.colour_distance for a in answers.values())
    silent = {i: a.colour_distance for i, a in answers.items() if not a.review}
    out = {"no_white_cell_on_smear": len(d), "unflagged": len(silent), "unflagged_colour_distances": sorted(silent.values()),
           "lowest_colour_distance": d[0] if d else None, "highest_colour_distance": d[-1] if d else None}
    return out | ({"unflagged_files": [str(names[i]) for i in silent]} if names else {})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/no_cell_colours.json"))
    a = ap.parse_args()
    model = fastest(load_model())
    out: dict = {"bgr": {}, "red_cells_only": {}}
    for name, cells in validation_sets().items():
        swapped = [np.ascontiguousarray(decode(path)[..., ::-1]) for path, _ in cells]
        out["bgr"][name] = summary(dropped(model, swapped), [p for p, _ in cells]) | {"cells": len(cells)}
        print(name, "red and blue swapped:", out["bgr"][name], flush=True)
    wins = red_cell_windows(Path(resolve_bccd(None)), 60)
    for how in SHIFTS:
        if how == "greyscale":  # grey has its own rule (GREY_SPECK): no colours to measure
            continue
        out["red_cells_only"][how] = summary(dropped(model, [w if how == "none" else shifted(w, how) for w in wins]))
        print(f"red cells only ({len(wins)} BCCD train windows), {how}:", out["red_cells_only"][how], flush=True)
    atomic_write_text(a.out, json.dumps(out, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
