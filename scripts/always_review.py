"""Which classes a model file should flag whatever their confidence (`ModelSpec.always_review`), from its own
validation cells, as `wbc train` now fits it; `--write` stores the answer in the model file (weights untouched).

    python scripts/always_review.py [MODEL] [--cache runs/selective_val.pt] [--write]

For a model trained before `wbc.training.train.unvouched` existed (the shipped one). Scores the model's validation
cells (its sources and split manifests, as recorded in the file; cached by scripts/selective.py), applies its own
temperature and review threshold, and prints, per predicted class, the answers the threshold leaves unflagged and how
many are right. No test split is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from selective import score_val

from wbc.infer.predictor import shipped_model_path
from wbc.models.io import load_model_file, save_model
from wbc.training.train import unvouched


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path, nargs="?", default=shipped_model_path())
    ap.add_argument("--cache", type=Path, default=Path("runs/selective_val.pt"))
    ap.add_argument("--write", action="store_true", help="store the classes in the model file")
    a = ap.parse_args()
    model, meta = load_model_file(a.model)
    d = score_val(a.model, a.cache)
    probs = torch.softmax(d["logits"] / model.spec.temperature, 1)
    classes, t = list(model.spec.classes), model.spec.review_threshold
    conf, pred = probs.max(1)
    for k, c in enumerate(classes):
        sure = (pred == k) & (conf >= t)
        print(f"{c:13} answers {int((pred == k).sum()):4}, at or above {t:.4f}: {int(sure.sum()):4}, right {int((d['y'][sure] == k).sum()):4}")
    found = unvouched(probs, d["y"], classes, t)
    print(f"always reviewed: {found or 'none'}")
    if a.write:
        model.spec.always_review = found
        save_model(model, a.model, meta.get("info"))
        print(f"written to {a.model}")


if __name__ == "__main__":
    main()
