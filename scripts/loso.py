"""The leave-one-source-out table: what to expect on a microscope a model has never seen.

    python scripts/loso.py --kaggle-only runs/kaggle --pbc-only runs/pbc --both runs/both [--out reports/loso]

Rows: models trained on Kaggle only, PBC only, both; each single-source model adapted to the other
source with `wbc adapt` from unlabelled images (the other source's train images, labels unused),
and with 10 labelled cells a class more. Columns: Kaggle official TEST (image-level and mean per
source cell), PBC test/ (over all eight classes and restricted to the four both sources share).
The test splits are only measured here; nothing is chosen on them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import defaultdict
from pathlib import Path

from wbc._util.io import atomic_write_text
from wbc.data.locate import resolve_data
from wbc.data.split import read_manifest
from wbc.evaluation.evaluate import evaluate
from wbc.infer.predictor import load_model
from wbc.training.adapt import AdaptConfig, adapt

SHARED = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def link_folder(dest: Path, files: list, by_class: bool = False) -> Path:
    """A folder of symbolic links (per class when `by_class`): adapt's inputs without copying data."""
    dest.mkdir(parents=True, exist_ok=True)
    for f, label in files:
        d = dest / label if by_class else dest
        d.mkdir(exist_ok=True)
        link = d / f"{label}_{Path(f).name}"
        if not link.exists():
            os.symlink(Path(f).resolve(), link)
    return dest


def target_folders(name: str, data: str, manifest: Path, work: Path, classes: list[str], n_unlabelled: int, seed: int = 0) -> tuple[Path, Path]:
    """(n unlabelled train images, 10 labelled train cells a class of `classes`, each from a different source cell)."""
    rows = [r for r in read_manifest(manifest, data) if r.split in ("train", "val")]
    random.Random(seed).shuffle(rows)
    unlabelled = link_folder(work / f"{name}_unlabelled", [(r.path, "x") for r in rows[:n_unlabelled]])
    per: dict[str, list] = defaultdict(list)
    seen = set()
    for r in rows:
        if r.label in classes and len(per[r.label]) < 10 and r.group not in seen:
            seen.add(r.group)
            per[r.label].append((r.path, r.label))
    return unlabelled, link_folder(work / f"{name}_labelled_{len(classes)}", [x for v in per.values() for x in v], by_class=True)


def figures(model: Path, kaggle: str, pbc: str, manifest: Path, out: Path) -> dict:
    p = load_model(model)
    k = evaluate(p, kaggle, "TEST", out / "kaggle", manifest=str(manifest), ignore_unknown=True)
    b = evaluate(p, pbc, "TEST", out / "pbc", ignore_unknown=True)
    b4 = evaluate(p, pbc_shared_view(pbc, out), "ALL", out / "pbc4", ignore_unknown=True)
    ps = k.get("per_source_cell") or {}
    return {"kaggle_test": k["accuracy"], "kaggle_test_in_set": k["accuracy_in_set_classes"],
            "kaggle_per_source_cell": ps.get("mean_accuracy_per_source"), "pbc_test": b["accuracy"] if len(p.classes) == 8 else None,
            "pbc_test_shared4": b4["accuracy_in_set_classes"], "pbc_test_shared4_full": b4["accuracy"],
            "kaggle_flagged": k["review"]["flagged_share"], "kaggle_unflagged_acc": k["review"]["accuracy_unflagged"],
            "pbc_flagged": b["review"]["flagged_share"], "pbc_unflagged_acc": b["review"]["accuracy_unflagged"]}


def pbc_shared_view(pbc: str, out: Path) -> str:
    """PBC test/ restricted to the four classes Kaggle shares (links)."""
    dest = out.parent / "pbc_test_shared4"
    if not dest.exists():
        files = [(str(f), c) for c in SHARED for f in sorted((Path(pbc) / "test" / c).glob("*.jpg")) if not f.name.startswith(".")]
        link_folder(dest, files, by_class=True)
    return str(dest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kaggle-only", type=Path, required=True)
    ap.add_argument("--pbc-only", type=Path, required=True)
    ap.add_argument("--both", type=Path, required=True)
    ap.add_argument("--kaggle", default=None)
    ap.add_argument("--pbc", default=str(Path(resolve_data(None)).parent / "pbc"))
    ap.add_argument("--out", type=Path, default=Path("reports/loso"))
    a = ap.parse_args()
    kaggle = resolve_data(a.kaggle)
    work = a.out / "folders"
    kman = a.kaggle_only / "manifests" / "kaggle.csv"
    pman = a.pbc_only / "manifests" / "pbc.csv"
    rows = {}
    models = {"Kaggle only": a.kaggle_only / "model.safetensors", "PBC only": a.pbc_only / "model.safetensors", "Kaggle + PBC": a.both / "model.safetensors"}
    for name, path in models.items():
        rows[name] = figures(path, kaggle, a.pbc, kman, a.out / name.replace(" ", "_"))
        print(name, rows[name], flush=True)
    k_unl, k_lab = target_folders("kaggle", kaggle, kman, work, SHARED, 400)
    p_unl, p_lab4 = target_folders("pbc", a.pbc, pman, work, SHARED, 800)
    adapted = a.out / "adapted"
    plan = [("Kaggle only, adapted to PBC (unlabelled)", models["Kaggle only"], p_unl, None),
            ("Kaggle only, adapted to PBC + 10 labelled a class", models["Kaggle only"], p_unl, p_lab4),
            ("PBC only, adapted to Kaggle (unlabelled)", models["PBC only"], k_unl, None),
            ("PBC only, adapted to Kaggle + 10 labelled a class", models["PBC only"], k_unl, k_lab),
            ("Kaggle + PBC, adapted to Kaggle (unlabelled)", models["Kaggle + PBC"], k_unl, None),
            ("Kaggle + PBC, adapted to PBC (unlabelled)", models["Kaggle + PBC"], p_unl, None)]
    for name, model, unl, lab in plan:
        dest = adapted / (name.replace(" ", "_").replace(",", "").replace("+", "plus") + ".safetensors")
        report = adapt(model, str(unl), dest, AdaptConfig(), labelled=str(lab) if lab else None)
        rows[name] = figures(dest, kaggle, a.pbc, kman, a.out / dest.stem) | {"px_per_um": report["scale"]["px_per_um"]}
        print(name, rows[name], flush=True)
    write_table(a.out / "loso", rows, ["model", "Kaggle TEST, image", "Kaggle TEST, per source cell", "PBC test, 8 classes", "PBC test, 4 shared classes"],
                ["kaggle_test_in_set", "kaggle_per_source_cell", "pbc_test", "pbc_test_shared4"])


def write_table(stem: Path, rows: dict, header: list[str], keys: list[str]) -> None:
    """`rows` as stem.json and as a Markdown table of percentages (stem.md, also printed)."""
    atomic_write_text(stem.with_suffix(".json"), json.dumps(rows, indent=2))
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {name} | " + " | ".join(pct(r[k]) for k in keys) + " |" for name, r in rows.items()]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
