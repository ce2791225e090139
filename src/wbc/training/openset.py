"""The open-set decision fitted for shift: the distance statistics of the training cells, and operating points
written as quantiles of the validation distances, so one choice transfers from the leave-one-source-out fold
models (where it was fitted on sources they never saw) to the shipped model.

A cell's distance (wbc.models.openset) above `near_distance` flags it for review ("unlike the training cells");
above `far_distance` it is UNIDENTIFIED. Both are quantiles of the same model's validation distances; the
quantiles themselves are chosen by `scripts/openset_loso.py` on held-out sources (never on a test split).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class OpenSetConfig:
    """The shipped operating point (scripts/openset_loso.py: the quantiles that held on all three held-out sources)."""

    near_quantile: float = 0.95  # of validation distances: farther cells are flagged for review
    far_quantile: float = 0.999  # of validation distances, times far_factor: farther cells are UNIDENTIFIED
    far_factor: float = 1.5


def fit_statistics(model, feats: torch.Tensor, labels: torch.Tensor) -> None:
    """Give `model` its open-set statistics from training-cell features (backbone output, un-augmented views)."""
    from wbc.models.openset import FeatureDistance

    if model.openset is None:
        model.openset = FeatureDistance(feats.shape[1], len(model.spec.classes)).to(feats.device)
    model.openset.fit(feats.cpu().float(), labels.cpu())
    model.spec.openset = True


def min_distance(model, feats: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.openset(feats.to(model.openset.center.device).float()).min(1).values.cpu()


def set_thresholds(spec, val_distance: np.ndarray, cfg: OpenSetConfig) -> dict:
    """near/far distances of `spec` from the validation distances; what they flag on validation."""
    spec.near_distance = float(np.quantile(val_distance, cfg.near_quantile))
    spec.far_distance = float(np.quantile(val_distance, cfg.far_quantile) * cfg.far_factor)
    return {"near_distance": spec.near_distance, "far_distance": spec.far_distance,
            "val_near": float((val_distance > spec.near_distance).mean()), "val_far": float((val_distance > spec.far_distance).mean())}
