"""Batch-norm statistics under a change of microscope: updated vs frozen in fine-tuning, with and without
re-estimating them on the new microscope's unlabelled images (`wbc adapt`, AdaBN).

    python scripts/bn_effect.py --updated runs/kaggle --frozen runs/kaggle_bnfrozen [--out reports/bn_effect]
        [--labelled reports/loso/folders/pbc_labelled_4]

Both models are trained on Kaggle only (the same round 1, `--bn train` vs `--bn frozen` in round 2).
The unseen microscope is PBC; its figures come from PBC `train/` (the four classes Kaggle shares),
which neither model saw, so PBC `test/` stays untouched. The unlabelled images given to adapt are
400 PBC train images drawn at random (labels unused): the usual test-time adaptation setting.
With `--labelled` (the 10 PBC train cells a class that scripts/loso.py picks), each model is also
adapted the way `wbc adapt --labelled` does by default and measured on PBC test/'s four shared
classes, as the leave-one-source-out table's labelled rows are (a report: nothing is chosen on it).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from loso import SHARED, link_folder, write_table

from wbc.data.locate import resolve_data
from wbc.evaluation.evaluate import evaluate
from wbc.infer.predictor import load_model
from wbc.training.adapt import AdaptConfig, adapt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updated", type=Path, required=True)
    ap.add_argument("--frozen", type=Path, required=True)
    ap.add_argument("--pbc", default=str(Path(resolve_data(None)).parent / "pbc"))
    ap.add_argument("--out", type=Path, default=Path("reports/bn_effect"))
    ap.add_argument("--labelled", default=None, help="folder per class of 10 labelled PBC train cells a class")
    a = ap.parse_args()
    files = [(str(f), c) for c in SHARED for f in sorted((Path(a.pbc) / "train" / c).glob("*.jpg")) if not f.name.startswith(".")]
    target = link_folder(a.out / "pbc_train_shared4", files, by_class=True)
    unlabelled = link_folder(a.out / "pbc_unlabelled", random.Random(0).sample([(f, "x") for f, _ in files], 400))
    rows = {}
    for name, run in (("updated", a.updated), ("frozen", a.frozen)):
        summary = json.loads((run / "summary.json").read_text())
        rows[name] = {"kaggle_val": summary["metrics"]["val"]["accuracy"],
                      "pbc_train4": evaluate(load_model(run / "model.safetensors"), str(target), "ALL", ignore_unknown=True)["accuracy_in_set_classes"]}
        for stats in ("target", "keep"):
            adapted = a.out / f"{name}_adapted_{stats}.safetensors"
            adapt(run / "model.safetensors", str(unlabelled), adapted, AdaptConfig(bn_stats=stats))
            rows[name][f"pbc_train4_{stats}"] = evaluate(load_model(adapted), str(target), "ALL", ignore_unknown=True)["accuracy_in_set_classes"]
        if a.labelled:
            test4 = link_folder(a.out / "pbc_test_shared4", [(str(f), c) for c in SHARED for f in sorted((Path(a.pbc) / "test" / c).glob("*.jpg"))
                                                             if not f.name.startswith(".")], by_class=True)
            adapted = a.out / f"{name}_labelled.safetensors"
            adapt(run / "model.safetensors", str(unlabelled), adapted, AdaptConfig(), labelled=a.labelled)
            for key, m in (("pbc_test4", run / "model.safetensors"), ("pbc_test4_labelled", adapted)):
                rows[name][key] = evaluate(load_model(m), str(test4), "ALL", ignore_unknown=True)["accuracy_in_set_classes"]
        print(name, rows[name], flush=True)
    header = ["round-2 BN statistics", "Kaggle val", "PBC train, 4 classes", "adapted: statistics re-estimated", "adapted: statistics kept (scale only)"]
    keys = ["kaggle_val", "pbc_train4", "pbc_train4_target", "pbc_train4_keep"]
    if a.labelled:
        header += ["PBC test, 4 classes", "adapted (auto) + 10 labelled a class"]
        keys += ["pbc_test4", "pbc_test4_labelled"]
    write_table(a.out / "bn_effect", rows, header, keys)


if __name__ == "__main__":
    main()
