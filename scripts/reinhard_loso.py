"""Stain normalisation at test time, leave one source out (issue 17 item 6): does mapping an unseen source's
colours onto the training sources' (Reinhard: each view's L*a*b* mean and spread moved to the reference's)
carry a fold model further than the raw pixels? Measured on the held-out source's train split, never its test.

    python scripts/reinhard_loso.py [--per-class 100]

Fold models: runs/fold_no_{pbc,kaggle,munich}_no-white-balance (made by scripts/loso.sh). The reference
is the mean L*a*b* statistics of 100 views a source of the fold's own training sources.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

import cv2
import numpy as np
import torch

from wbc.data.scan import scan
from wbc.infer.predictor import load_model

DATA = {"kaggle": "../shared/data/blood-cells", "pbc": "../shared/data/pbc", "munich": "../shared/data/munich-aml"}
FOLDS = {"pbc": ("kaggle", "munich"), "kaggle": ("pbc", "munich"), "munich": ("kaggle", "pbc")}


def rows(source: str, per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    by = defaultdict(list)
    for r in scan(DATA[source], check=False).records:
        if r.split.upper() == "TRAIN":
            by[r.label].append(str(r.path))
    out = []
    for label, files in sorted(by.items()):
        files = sorted(files)
        random.Random(seed).shuffle(files)
        out += [(f, label) for f in files[:per_class]]
    return out


def lab_stats(view: torch.Tensor) -> np.ndarray:
    lab = cv2.cvtColor(np.ascontiguousarray(view.permute(1, 2, 0).numpy()), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    return np.concatenate([lab.mean(0), lab.std(0) + 1e-3])


def reinhard(view: torch.Tensor, ref: np.ndarray) -> torch.Tensor:
    """Reinhard to the fold's reference as first measured (no spread floor, values truncated): kept apart from
    wbc.image.stain.reinhard, which floors the spreads and rounds, so the published table stays reproducible."""
    rgb = np.ascontiguousarray(view.permute(1, 2, 0).numpy())
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    s = lab_stats(view)
    lab = (lab - s[:3]) / s[3:] * ref[3:] + ref[:3]
    out = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def probabilities(p, views: list[torch.Tensor]) -> torch.Tensor:
    """A predictor's class probabilities of framed views, 32 at a time (the LOSO scripts share it)."""
    return torch.cat([p.probabilities(torch.stack(views[i : i + 32]).contiguous()) for i in range(0, len(views), 32)])


def accuracy(p, views, labels) -> tuple[float, float]:
    probs = probabilities(p, views)
    known = [i for i, y in enumerate(labels) if y in p.classes]
    y = torch.tensor([p.classes.index(labels[i]) for i in known])
    pr = probs[known]
    top1 = float((pr.argmax(1) == y).float().mean())
    in_set = sorted({p.classes.index(labels[i]) for i in known})
    restricted = torch.tensor(in_set)[pr[:, in_set].argmax(1)]
    return top1, float((restricted == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=100)
    a = ap.parse_args()
    print("| held out (fold model) | cells | raw: accuracy / restricted | Reinhard to the training sources: accuracy / restricted |")
    print("|---|---|---|---|")
    for held, train_sources in FOLDS.items():
        p = load_model(f"runs/fold_no_{held}_no-white-balance/model.safetensors")
        ref = np.mean([lab_stats(p.frame(f).pixels) for s in train_sources for f, _ in rows(s, 26)[:100]], 0)
        test = [(f, y) for f, y in rows(held, a.per_class) if y in p.classes]
        views = [p.frame(f).pixels for f, _ in test]
        labels = [y for _, y in test]
        raw = accuracy(p, views, labels)
        norm = accuracy(p, [reinhard(v, ref) for v in views], labels)
        print(f"| {held} | {len(test)} | {100 * raw[0]:.1f} / {100 * raw[1]:.1f} | {100 * norm[0]:.1f} / {100 * norm[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
