"""Test-time views, leave one source out (issue 17 item 6): does averaging the class probabilities of a cell's
flipped and rotated views carry a fold model further on a source it never saw? Measured on the held-out
source's train split (100 cells a class), never its test split.

    python scripts/tta_loso.py [--per-class 100] [--variant no-white-balance]

Fold models: runs/fold_no_{pbc,kaggle,munich}_<variant> (made by scripts/loso.sh). Views: the cell as framed;
4 = with its horizontal, vertical and both flips; 8 = the square's eight symmetries (flips x 90-degree turns).
"Unflagged" is at the fold model's own review threshold (set on its validation), confidence alone.
"""

from __future__ import annotations

import argparse

import torch
from reinhard_loso import FOLDS, probabilities, rows

from wbc.infer.predictor import load_model


def views(view: torch.Tensor, n: int) -> list[torch.Tensor]:
    out = [view, view.flip(-1), view.flip(-2), view.flip(-1, -2)][: min(n, 4)]
    return out + [v.transpose(-1, -2) for v in out][: max(0, n - 4)]


def mean_probabilities(p, pixels: list[torch.Tensor], n: int) -> torch.Tensor:
    """The class probabilities averaged over each view's first `n` symmetries."""
    return torch.stack([probabilities(p, [views(v, n)[k] for v in pixels]) for k in range(n)]).mean(0)


def figures(p, probs: torch.Tensor, labels: list[str]) -> str:
    y = torch.tensor([p.classes.index(x) for x in labels])
    conf, pred = probs.max(1)
    keep = conf >= p.spec.review_threshold
    right = pred == y
    unflagged = f"{100 * keep.float().mean():.1f} / {100 * right[keep].float().mean():.1f}" if keep.any() else "0.0 / -"
    return f"{100 * right.float().mean():.1f} | {unflagged}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--variant", default="no-white-balance")
    a = ap.parse_args()
    print("| held out | cells | views | accuracy | unflagged / right (%) |")
    print("|---|---|---|---|---|")
    for held in FOLDS:
        p = load_model(f"runs/fold_no_{held}_{a.variant}/model.safetensors")
        test = [(f, y) for f, y in rows(held, a.per_class) if y in p.classes]
        pixels = [p.frame(f).pixels for f, _ in test]
        labels = [y for _, y in test]
        for n in (1, 4, 8):
            print(f"| {held} | {len(test)} | {n} | {figures(p, mean_probabilities(p, pixels, n), labels)} |", flush=True)


if __name__ == "__main__":
    main()
