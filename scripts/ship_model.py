"""Copy a finished run into the package as the shipped model, with its measured figures.

    python scripts/ship_model.py runs/both [--kaggle DIR] [--pbc DIR]

Evaluates the run's model on the Kaggle TEST_SIMPLE and official TEST splits and on the PBC
`test/` folder (reporting only: the model was selected on the group-disjoint validation splits),
stores those figures in the model file's metadata beside the validation ones, and copies the
Kaggle split manifest next to it (evaluate reads it for per-source-cell figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from wbc._util.io import atomic_write_text
from wbc.data.locate import resolve_data
from wbc.evaluation.evaluate import evaluate
from wbc.infer.predictor import load_model, shipped_model_path
from wbc.models.io import load_model_file, save_model

KEEP = ("images", "accuracy", "accuracy_in_set_classes", "balanced_accuracy", "macro_f1", "ece", "per_class", "per_source_cell", "review",
        "no_white_cell", "scale")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--kaggle", default=None)
    ap.add_argument("--pbc", default=str(Path(resolve_data(None)).parent / "pbc"))
    ap.add_argument("--out", type=Path, default=Path("reports/shipped"))
    a = ap.parse_args()
    kaggle = resolve_data(a.kaggle)
    predictor = load_model(a.run / "model.safetensors")
    manifest = a.run / "manifests" / "kaggle.csv"
    figures = {}
    for name, data, split, man in (("kaggle_test_simple", kaggle, "TEST_SIMPLE", manifest), ("kaggle_test", kaggle, "TEST", manifest),
                                   ("pbc_test", a.pbc, "TEST", None)):
        r = evaluate(predictor, data, split, a.out / name, manifest=str(man) if man and man.is_file() else None, ignore_unknown=True)
        figures[name] = {k: r[k] for k in KEEP}
        print(f"{name}: accuracy {r['accuracy']:.4f} (in-set {r['accuracy_in_set_classes']:.4f}), balanced {r['balanced_accuracy']:.4f}")
    model, meta = load_model_file(a.run / "model.safetensors")
    info = meta["info"]
    info["metrics"].update(figures)
    dest = shipped_model_path()
    save_model(model, dest, info)
    if manifest.is_file():
        shutil.copyfile(manifest, dest.with_name("split_manifest.csv"))
    atomic_write_text(a.out / "figures.json", json.dumps(info["metrics"], indent=2))
    print(f"shipped {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
