"""Copy a finished run into the package as the shipped model, with its measured figures.

    python scripts/ship_model.py runs/lite0 [--data DIR]

Evaluates the run's model on TEST_SIMPLE and the official TEST split (reporting only: the model
was selected on the group-disjoint validation split), stores those figures in the model file's
metadata beside the validation ones, and copies the split manifest next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from wbc.data.locate import resolve_data
from wbc.evaluate import evaluate
from wbc.io_utils import atomic_write_text
from wbc.models.io import load_model_file, save_model
from wbc.predict import load_model, shipped_model_path

KEEP = ("images", "accuracy", "balanced_accuracy", "macro_f1", "ece", "per_class", "per_source_cell")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", type=Path, default=Path("reports/shipped"))
    a = ap.parse_args()
    data = resolve_data(a.data)
    predictor = load_model(a.run / "model.safetensors")
    manifest = str(a.run / "split_manifest.csv")
    figures = {}
    for split in ("TEST_SIMPLE", "TEST"):
        r = evaluate(predictor, data, split, a.out / split, manifest=manifest)
        figures[split.lower()] = {k: r[k] for k in KEEP}
        print(f"{split}: accuracy {r['accuracy']:.4f}, balanced {r['balanced_accuracy']:.4f}")
    model, meta = load_model_file(a.run / "model.safetensors")
    info = meta["info"]
    info["metrics"].update(figures)
    dest = shipped_model_path()
    save_model(model, dest, info)
    shutil.copyfile(manifest, dest.with_name("split_manifest.csv"))
    atomic_write_text(a.out / "figures.json", json.dumps(info["metrics"], indent=2))
    print(f"shipped {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
