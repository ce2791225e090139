"""An overexposed camera: validation cells brightened (each channel times a gain, clipped at 255), read as before and now.

    python scripts/exposure.py [--out reports/exposure.json]

Validation cells (240 Kaggle, 240 PBC, 120 Munich; the shipped split manifests, never a test split) at gains 1.0 to
1.8 go through `predict` as a user's images do. Per gain: accuracy, real cells answered "no white cell" (and how many
of those in silence, without a review flag), the share left unflagged and how many of those are right (a dropped cell
counts as unflagged and wrong). "before": the stain read as it was before 2026-12-05 (no darkened second reading of
an overexposed smear, its drops not flagged, its answers not flagged); "now": as shipped (since session 17 every
answer on a smear whose background is clipped white carries the `overexposed` reason too).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from low_resolution import validation_sets

import wbc
import wbc.image.framing as framing
from wbc._util.io import atomic_write_text
from wbc.image.decode import decode
from wbc.infer.predictor import NO_WHITE_CELL

GAINS = (1.0, 1.2, 1.4, 1.6, 1.8)


def measured(answers, truth) -> dict:
    right = np.array([a.label == t for a, t in zip(answers, truth)])
    unflagged = np.array([not a.review for a in answers])
    dropped = [a for a in answers if a.label == NO_WHITE_CELL]
    return {"accuracy": round(float(right.mean()), 3), "dropped": len(dropped), "dropped_silently": sum(not a.review for a in dropped),
            "unflagged": round(float(unflagged.mean()), 3), "unflagged_right": round(float(right[unflagged].mean()), 3) if unflagged.any() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/exposure.json"))
    a = ap.parse_args()
    sets = validation_sets()
    model, now, table = wbc.load_model(), framing.washed_out, {}
    for name, cells in sets.items():
        images, truth = [decode(p) for p, _ in cells], [c for _, c in cells]
        for gain in GAINS:
            bright = [np.clip(im.astype(np.float32) * gain, 0, 255).astype(np.uint8) for im in images]
            for when, rule in (("before", lambda rgb: False), ("now", now)):
                framing.washed_out = rule  # before: no overexposed smear is ever recognised
                row = table.setdefault(name, {}).setdefault(str(gain), {})[when] = measured(model.predict(bright), truth)
                print(f"{name:7s} x{gain} {when:6s} {row}", flush=True)
            framing.washed_out = now
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
