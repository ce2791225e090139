"""Copy a finished run into the package as the shipped model, with its measured figures.

    python scripts/ship_model.py runs/both [--kaggle DIR] [--pbc DIR] [--munich DIR] [--dry-run]

Evaluates the run's model on the Kaggle TEST_SIMPLE and official TEST splits, the PBC `test/` and
the Munich AML `test/` folders (reporting only: the model was selected on the group-disjoint
validation splits); for a model with a BLAST class, blast recall per source, what blasts are taken
for, and how many other cells are called blasts. `--dry-run` measures without shipping.
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
        "no_white_cell", "scale", "abnormal")


def blast_figures(r: dict) -> dict | None:
    """Blast recall and what blasts were called (sets with blasts); blasts called among the other cells (every set)."""
    cm = r["confusion_matrix"]
    if "BLAST" not in cm["columns"]:
        return None
    col = cm["columns"].index("BLAST")
    out = {"non_blasts_called_blast": sum(row[col] for name, row in zip(cm["rows"], cm["rows_true"]) if name != "BLAST")}
    if "BLAST" in cm["rows"]:
        row = cm["rows_true"][cm["rows"].index("BLAST")]
        out |= {"blasts": sum(row), "recall": row[col] / max(1, sum(row)),
                "called": {c: n for c, n in zip(cm["columns"], row) if n and c != "BLAST"}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--kaggle", default=None)
    ap.add_argument("--pbc", default=str(Path(resolve_data(None)).parent / "pbc"))
    ap.add_argument("--munich", default=str(Path(resolve_data(None)).parent / "munich-aml"))
    ap.add_argument("--out", type=Path, default=Path("reports/shipped"))
    ap.add_argument("--dry-run", action="store_true", help="measure only; do not copy into the package")
    a = ap.parse_args()
    kaggle = resolve_data(a.kaggle)
    predictor = load_model(a.run / "model.safetensors")
    manifest = a.run / "manifests" / "kaggle.csv"
    figures = {}
    for name, data, split, man in (("kaggle_test_simple", kaggle, "TEST_SIMPLE", manifest), ("kaggle_test", kaggle, "TEST", manifest),
                                   ("pbc_test", a.pbc, "TEST", None), ("munich_test", a.munich, "TEST", None)):
        if not Path(data).is_dir():
            print(f"{name}: no data at {data}, skipped")
            continue
        r = evaluate(predictor, data, split, a.out / name, manifest=str(man) if man and man.is_file() else None, ignore_unknown=True,
                     abnormal=name == "munich_test")  # blasts, when not a class of the model: caught or missed
        figures[name] = {k: r[k] for k in KEEP if k in r}
        figures[name]["blast"] = blast_figures(r)
        print(f"{name}: accuracy {r['accuracy']:.4f} (in-set {r['accuracy_in_set_classes']:.4f}), balanced {r['balanced_accuracy']:.4f}; "
              f"review: {r['review']['flagged_share']:.1%} flagged, the rest {r['review']['accuracy_unflagged'] or 0:.4f} right; "
              f"no white cell {r['no_white_cell']} of {r['images']}; blast {figures[name]['blast']}")
    if a.dry_run:
        atomic_write_text(a.out / "figures.json", json.dumps(figures, indent=2))
        print(f"figures in {a.out / 'figures.json'} (dry run: nothing shipped)")
        return
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
