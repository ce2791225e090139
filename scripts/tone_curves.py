"""Other cameras' light and tone, and cells cut out of their smear: the model's validation cells as another lab's
camera or data set might give them, through `predict` one by one (scale measured), as a user's images go.

    python scripts/tone_curves.py [--model FILE] [--shifts none,to_pbc,lab_1,...] [--all] [--out reports/tone_curves.json]

Shifts (wbc.data.shifts): dim light (0.6, 0.4, 0.25 of it), a cut-out onto black, haze, gamma 0.6 and 1.6, contrast
1.5, saturation 1.8 and 0.5; and `to_SOURCE` (not in the default list): each image's L*a*b* mean and spread moved to
SOURCE's average over 150 of its train images (Reinhard), one lab's cells in another lab's light and stain; `lab_SEED`:
every image moved into one lab drawn (seeded) from the span training's --transfer draws from (LAB_SPAN), a folder from
a lab none of the sources is; `whole_to_SOURCE`, `whole_lab_SEED`: the same targets reached by one mapping for all
images of a source (its average image onto the target), as a lab's stain and light change every image alike. Per
shift and source (120 Kaggle, 120 PBC, 60 Munich validation cells; `--all`: 240, 240, 120; never a test split):
accuracy, the share left unflagged and how many of those are right, and real cells answered "no white cell"; and each set judged as one folder, as `wbc predict` judges one (`LabCheck`: the shares of
its cells unlike the training cells' features and colours, and what is left unflagged when the folder is flagged whole).
"""

from __future__ import annotations

import argparse
import copy
import csv
import functools
import json
import random
from pathlib import Path

import cv2
import numpy as np
from low_resolution import ASSETS, SOURCES, validation_sets

from wbc._util.io import atomic_write_text
from wbc.data.locate import resolve_data
from wbc.data.shifts import TONES, shifted_field
from wbc.data.transforms import drawn_lab
from wbc.image.decode import decode
from wbc.image.stain import lab_stats, reinhard
from wbc.infer.predictor import NO_WHITE_CELL, flag_run, lab_check, load_model

SHIFTS = ("none", "dim_0.6", "dim_0.4", "dim_0.25", "cut_out", *TONES)


def changed(rgb: np.ndarray, how: str, own: str | None = None) -> np.ndarray:
    """`rgb` under `how` (dim_G: the light times G, shifted_field's exposure_G; to_SOURCE: that source's colours; any
    lab_SEED: a lab drawn from LAB_SPAN; whole_to_SOURCE / whole_lab_SEED: the same target reached by one mapping for
    every image of its source `own`; any other name: wbc.data.shifts.shifted)."""
    if how.startswith("whole_"):
        target = source_colours(how[9:]) if how.startswith("whole_to_") else drawn_lab(random.Random(int(how[10:])))
        return lab_moved(rgb, source_colours(own), target)
    if how.startswith("to_"):
        return reinhard(rgb, source_colours(how[3:]))
    if how.startswith("lab_"):
        return reinhard(rgb, drawn_lab(random.Random(int(how[4:]))))  # seeded: one lab for every image
    return shifted_field(rgb, how.replace("dim_", "exposure_"))[0]


def lab_moved(rgb: np.ndarray, start: tuple[float, ...], target: tuple[float, ...]) -> np.ndarray:
    """`rgb` through the one L*a*b* mapping that takes its source's average image (`start`) to `target`: a lab's stain
    and light changed as a whole. `to_SOURCE` maps each image's own mean and spread onto the target instead, so an image
    with little stain in it (a platelet among red cells) takes on a whole cell's worth of purple that no lab would give it."""
    lab, _, fill = lab_stats(rgb)
    gain = np.float64(target[3:]) / np.float64(start[3:])
    affine = np.hstack([np.diag(gain), (np.float64(target[:3]) - np.float64(start[:3]) * gain)[:, None]])
    out = cv2.cvtColor(cv2.transform(lab, affine), cv2.COLOR_LAB2RGB)
    if fill is not None:
        out[fill] = rgb[fill]
    return out


@functools.cache
def source_colours(name: str) -> tuple[float, ...]:
    """The L*a*b* means and spreads (OpenCV's 0-255 scale) of an average image of source `name`: 150 of its train images,
    without their black fill (`wbc.image.stain.lab_stats`)."""
    manifest, folder = SOURCES[name]
    root = Path(resolve_data(None)).parent / folder
    rows = [r for r in csv.DictReader((ASSETS / manifest).open()) if r["split"] == "train"]
    stats = []
    for r in rows[:: max(1, len(rows) // 150)]:
        stats.append(lab_stats(decode(root / r["path"]))[1])
    return tuple(float(v) for v in np.mean(stats, 0))


def measure(answers, truth) -> dict:
    right = np.array([a.label == t for a, t in zip(answers, truth)])
    free = np.array([not a.review and a.label != NO_WHITE_CELL for a in answers])
    return {"cells": len(truth), "accuracy": round(float(right.mean()), 3), "unflagged": round(float(free.mean()), 3),
            "unflagged_right": round(float(right[free].mean()), 3) if free.any() else None,
            "dropped": int(sum(a.label == NO_WHITE_CELL for a in answers))}


def as_folder(model, answers, truth) -> dict:
    """The cells judged as one folder, as `wbc predict` judges it (LabCheck): the shares unlike the training cells and
    their colours, whether it is flagged whole, and what is left unflagged then."""
    lab = lab_check(model, answers)
    judged = flag_run(copy.deepcopy(answers), lab)
    r = measure(judged, truth)
    return {"features_far": round(lab.share or 0, 3), "colours_far": round(lab.colour_share or 0, 3),
            "judged": sorted(lab.reasons()), "unflagged": r["unflagged"], "unflagged_right": r["unflagged_right"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--shifts", default=",".join(SHIFTS))
    ap.add_argument("--all", action="store_true", help="every validation cell of the scripts' sets (240 / 240 / 120), not half")
    ap.add_argument("--out", type=Path, default=Path("reports/tone_curves.json"))
    a = ap.parse_args()
    model = load_model(a.model)
    sets = {name: cells if a.all else cells[:60 if name == "munich" else 120] for name, cells in validation_sets().items()}
    rows = {}
    for how in a.shifts.split(","):
        for name, cells in sets.items():
            answers = [model.predict([changed(decode(p), how, name)])[0] for p, _ in cells]
            truth = [c for _, c in cells]
            rows.setdefault(how, {})[name] = r = measure(answers, truth) | {"as_folder": as_folder(model, answers, truth)}
            f = r["as_folder"]
            print(f"{how:15} {name:7} {r['accuracy']:6.1%}  unflagged {r['unflagged']:6.1%} right "
                  f"{'-' if r['unflagged_right'] is None else format(r['unflagged_right'], '.1%'):>6}  dropped {r['dropped']}  | folder: "
                  f"colours far {f['colours_far']:5.1%} features far {f['features_far']:5.1%} -> unflagged {f['unflagged']:5.1%}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps({"model": a.model or "shipped", "shifts": rows}, indent=2))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
