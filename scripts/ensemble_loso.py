"""An ensemble of the colour variants, leave one source out (issue 17 item 6): do the plain, white-balanced and
stain-normalised fold models, their class probabilities averaged, carry further on a source none of them saw
than each alone? Measured on the held-out source's train split (100 cells a class), never its test split.

    python scripts/ensemble_loso.py [--per-class 100]

Fold models: runs/fold_no_{pbc,kaggle,munich}_{no-white-balance,white-balance,stain-norm} (scripts/loso.sh).
Each member frames the cell its own way (its colour step); AURC ranks the cells by the top probability.
"""

from __future__ import annotations

import argparse

import torch
from reinhard_loso import FOLDS, probabilities, rows

from wbc.evaluation.risk import risk_coverage
from wbc.infer.predictor import load_model

VARIANTS = ("no-white-balance", "white-balance", "stain-norm")


def figures(probs: torch.Tensor, y: torch.Tensor) -> str:
    conf, pred = probs.max(1)
    right = (pred == y).numpy()
    aurc = risk_coverage(right, -conf.numpy())["aurc"]
    return f"{100 * right.mean():.1f} | {aurc:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=100)
    a = ap.parse_args()
    print("| held out | cells | model | accuracy | AURC |")
    print("|---|---|---|---|---|")
    for held in FOLDS:
        members = {v: load_model(f"runs/fold_no_{held}_{v}/model.safetensors") for v in VARIANTS}
        classes = members[VARIANTS[0]].classes
        assert all(m.classes == classes for m in members.values())
        test = [(f, lab) for f, lab in rows(held, a.per_class) if lab in classes]
        y = torch.tensor([classes.index(lab) for _, lab in test])
        probs = {v: probabilities(m, [m.frame(f).pixels for f, _ in test]) for v, m in members.items()}
        for v, pr in probs.items():
            print(f"| {held} | {len(test)} | {v} | {figures(pr, y)} |", flush=True)
        print(f"| {held} | {len(test)} | mean of the three | {figures(torch.stack(list(probs.values())).mean(0), y)} |", flush=True)
        print(f"| {held} | {len(test)} | plain + stain-norm | {figures((probs['no-white-balance'] + probs['stain-norm']) / 2, y)} |", flush=True)


if __name__ == "__main__":
    main()
