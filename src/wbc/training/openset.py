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


def colour_table(batches) -> np.ndarray:
    """The 15 colour numbers (wbc.image.stain.view_colours) of each view of `batches` ((uint8 N x 3 x H x W, labels)
    pairs, un-augmented: what inference sees), in order."""
    from wbc.image.stain import view_colours

    return np.array([view_colours(v.permute(1, 2, 0).numpy()) for x, _ in batches for v in x]).reshape(-1, 15)


@torch.no_grad()
def _features(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    out = [(model.features(x.float().contiguous(memory_format=torch.channels_last)), y) for x, y in batches]
    return torch.cat([f for f, _ in out]).float(), torch.cat([y for _, y in out])


@torch.no_grad()
def refit_adapted(model, lab_batches, labelled_batches=None, cfg: OpenSetConfig | None = None, min_cells: int = 5) -> dict:
    """After `wbc adapt` moved the backbone, the stored class means describe features it no longer makes: the
    means of the classes the lab labelled (at least `min_cells` cells) are taken from those cells, the others
    and the shared covariance kept; near/far are set again from the lab's own images at the shipped quantiles,
    as training sets them from validation. Returns what moved."""
    d = model.openset
    lab_feats = _features(model, lab_batches)[0]  # the backbone is fixed here: only the means move
    before = float((min_distance(model, lab_feats) > model.spec.near_distance).float().mean())
    refit = []
    if labelled_batches is not None:
        feats, y = _features(model, labelled_batches)
        for k in y.unique().tolist():
            if int((y == k).sum()) >= min_cells:
                d.means[k] = (feats[y == k].mean(0) - d.center) @ d.whiten
                refit.append(model.spec.classes[k])
    lab = min_distance(model, lab_feats).numpy()
    old = {"near_distance": model.spec.near_distance, "far_distance": model.spec.far_distance}
    new = set_thresholds(model.spec, lab, cfg or OpenSetConfig())
    return {"class_means_refit": refit, "before": old | {"lab_beyond_near": before}, "after": new}
