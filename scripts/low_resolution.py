"""How coarse may an image be? The model's validation cells made coarser, as a camera of lower magnification sees them.

    python scripts/low_resolution.py [--out reports/low_resolution.json]

Validation cells of each source (240 Kaggle, 240 PBC, 120 Munich; the shipped split manifests, never a test split),
shrunk (area filter) so that they hold 6, 5, 4, 3.5, 3, 2.5 and 2 pixels a micrometre, go through `predict` as a
user's images do (scale measured). Per resolution: accuracy, the share left unflagged and how many of those are right,
without the low-resolution reason and with it (`wbc.infer.predictor.MIN_PX_PER_UM`, chosen here: the lowest
resolution at which the unflagged answers stay at least 97% right on every source).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

import cv2
import numpy as np

import wbc
from wbc._util.io import atomic_write_text
from wbc.data.locate import resolve_data
from wbc.image.decode import decode

TARGETS = (None, 6.0, 5.0, 4.0, 3.5, 3.0, 2.5, 2.0)
ASSETS = Path(wbc.__file__).parent / "assets"


def val_cells(manifest: Path, root: Path, n: int) -> list[tuple[Path, str]]:
    rows = [r for r in csv.DictReader(manifest.open()) if r["split"] == "val"]
    random.Random(0).shuffle(rows)
    return [(root / r["path"], r["class"]) for r in rows[:n]]


SOURCES = {"kaggle": ("split_manifest.csv", "blood-cells/dataset2-master/images"), "pbc": ("split_pbc.csv", "pbc"),
           "munich": ("split_munich.csv", "munich-aml")}  # the shipped manifests, and each source's folder under the data


def validation_sets() -> dict[str, list[tuple[Path, str]]]:
    """The validation cells every degradation script reads: 240 Kaggle, 240 PBC, 120 Munich (the shipped manifests)."""
    data = Path(resolve_data(None)).parent
    return {name: val_cells(ASSETS / manifest, data / folder, 120 if name == "munich" else 240)
            for name, (manifest, folder) in SOURCES.items()}


def measured(answers, truth) -> dict:
    out = with_and_without(answers, truth, "low resolution")
    return {"accuracy": out.pop("accuracy"), "px_per_um_measured": round(float(np.median([a.px_per_um for a in answers])), 2), **out}


def with_and_without(answers, truth, reason: str) -> dict:
    """Accuracy, and the unflagged share and how many of those are right, without the review reason starting `reason`
    and with it (as shipped)."""
    right = np.array([a.label == t for a, t in zip(answers, truth)])
    own = [[r for r in (a.review_reason or "").split("; ") if r and not r.startswith(reason)] for a in answers]
    out = {"accuracy": round(float(right.mean()), 3)}
    for name, unflagged in (("without_rule", np.array([not o for o in own])), ("with_rule", np.array([not a.review for a in answers]))):
        out[name] = {"unflagged": round(float(unflagged.mean()), 3), "unflagged_right": round(float(right[unflagged].mean()), 3) if unflagged.any() else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/low_resolution.json"))
    a = ap.parse_args()
    scales = {"kaggle": 6.81, "pbc": 11.0, "munich": 14.0}
    sets = {name: (cells, scales[name]) for name, cells in validation_sets().items()}
    model, table = wbc.load_model(), {}
    for name, (cells, px) in sets.items():
        images, truth = [decode(p) for p, _ in cells], [c for _, c in cells]
        for target in TARGETS:
            f = 1.0 if target is None else target / px
            shrunk = images if f == 1 else [cv2.resize(im, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) for im in images]
            row = table.setdefault(name, {})[str(target or px)] = measured(model.predict(shrunk), truth)
            print(f"{name:7s} {target or px:5.2f} px/um: accuracy {row['accuracy']:.3f}; unflagged without the rule {row['without_rule']}, "
                  f"with it {row['with_rule']}", flush=True)
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
