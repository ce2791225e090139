"""The figures training selects on, shared with adapt and evaluate."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score


def balanced(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the set's classes (a prediction outside them is a miss, not a new class to average)."""
    with warnings.catch_warnings():  # a source predicted into a class it has none of: fine, it counts as a miss
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(y, pred))


def scores(logits: torch.Tensor, y: torch.Tensor, sources: list[str] | None = None) -> dict:
    """Loss, accuracy and balanced accuracy; with `sources`, each per source and balanced accuracy
    as the mean of the sources' own (so a big source cannot hide a small one)."""
    def one(lg, yy):
        pred = lg.argmax(1)
        bal = balanced(yy.numpy(), pred.numpy())
        return {"loss": F.cross_entropy(lg, yy).item(), "accuracy": (pred == yy).float().mean().item(), "balanced_accuracy": bal}

    out = one(logits, y)
    names = sorted(set(sources or []))
    if len(names) > 1:
        out["per_source"] = {n: one(logits[m], y[m]) for n in names for m in [torch.tensor([s == n for s in sources])]}
        out["balanced_accuracy"] = float(np.mean([v["balanced_accuracy"] for v in out["per_source"].values()]))
    return out
