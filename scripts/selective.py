"""Which review rule leaves the most cells unflagged at a given accuracy, chosen on validation only.

    python scripts/selective.py MODEL [--target 0.98] [--cache runs/selective_val.pt]

The model's own validation cells (its sources and split manifests, as recorded in the file) are scored once
(plain and mirrored views; cached). The validation groups are then split in two halves, a rule is fitted on
one half and measured on the other (and the other way round), so the figures say how the rule transfers to
cells it was not fitted on. Rules: one confidence threshold for every class (today's), one threshold per
predicted class, and each with the mirrored views averaged. No test split is read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from wbc._util.progress import NullProgress
from wbc.data.sources import load_rows, parse_sources
from wbc.models.io import load_model_file
from wbc.training.config import TrainConfig
from wbc.training.train import loader, predict_logits


def score_val(model_path: Path, cache: Path) -> dict:
    if cache.is_file():
        return torch.load(cache)
    model, meta = load_model_file(model_path)
    conf = meta["info"]["config"]
    cfg = TrainConfig(**{k: v for k, v in conf.items() if k in ("size", "field_um", "val_fraction", "seed", "batch_size", "white_balance")})
    with tempfile.TemporaryDirectory() as tmp:
        rows, infos = load_rows(parse_sources(conf["data"], conf["manifest"]), Path(tmp), cfg.val_fraction, cfg.seed)
    val = [r for r in rows if r.split == "val"]
    cfg.workers = 1
    feats, y = predict_logits(model, loader(val, model.spec.classes, infos, cfg, augment=False), torch.device("cpu"), NullProgress(), "val", True)

    class Flip(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def features(self, x):
            return self.m.features(torch.flip(x, dims=[3]))

    flipped, _ = predict_logits(Flip(model), loader(val, model.spec.classes, infos, cfg, augment=False), torch.device("cpu"), NullProgress(), "val", True)
    with torch.no_grad():
        out = {"y": y, "source": [r.source for r in val], "group": [f"{r.source}/{r.group}" for r in val],
               "logits": model.head(feats), "logits_flip": model.head(flipped), "T": model.spec.temperature,
               "distance": model.openset(feats).min(1).values if model.openset is not None else None,
               "near": model.spec.near_distance, "classes": list(model.spec.classes)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def lowest_threshold(conf: np.ndarray, correct: np.ndarray, target: float, min_kept: int = 1) -> float:
    """Lowest confidence whose cells at or above it are `target` accurate (1.0: none qualifies)."""
    order = np.argsort(-conf)
    acc = np.cumsum(correct[order]) / np.arange(1, len(conf) + 1)
    ok = np.nonzero((acc >= target) & (np.arange(1, len(conf) + 1) >= min_kept))[0]
    return float(conf[order][ok.max()]) if len(ok) else 1.0


def fit_rule(conf, pred, correct, n_classes, target, per_class: bool, min_kept: int = 20) -> np.ndarray:
    if not per_class:
        return np.full(n_classes, lowest_threshold(conf, correct, target))
    t = np.ones(n_classes)
    for k in range(n_classes):
        m = pred == k
        if m.sum() >= min_kept:
            t[k] = lowest_threshold(conf[m], correct[m], target, min_kept)
    return t


def measure(conf, pred, correct, sources, t) -> dict:
    kept = conf >= t[pred]
    out = {}
    for s in sorted(set(sources)) + ["all"]:
        m = np.ones_like(kept) if s == "all" else np.array([x == s for x in sources])
        k = kept & m
        out[s] = {"unflagged": float(k.sum() / m.sum()), "unflagged_right": float(correct[k].mean()) if k.any() else None}
    return out


def halves(groups: list[str]) -> np.ndarray:
    """True for the cells of a random half of the validation source images (seed 0): the rule is fitted on one half
    and measured on the other, so copies of one source image never sit on both sides."""
    groups = np.array(groups)
    ug = np.unique(groups)
    half = set(np.random.default_rng(0).permutation(ug)[: len(ug) // 2])
    return np.array([g in half for g in groups])


def beyond_near(d: dict) -> np.ndarray:
    """Cells the shipped rule flags by their distance, whatever their confidence."""
    dist = d["distance"].numpy() if d["distance"] is not None else None
    return dist > d["near"] if dist is not None and d["near"] else np.zeros(len(d["y"]), bool)


def cross_fitted(conf, pred, correct, sources: list[str], in_a: np.ndarray, n_classes: int, target: float, per_class: bool) -> dict:
    """The rule fitted on each half and measured on the other, the two averaged, per source and over all."""
    folds = []
    for fit_mask in (in_a, ~in_a):
        t = fit_rule(conf[fit_mask], pred[fit_mask], correct[fit_mask], n_classes, target, per_class)
        ev = ~fit_mask
        folds.append(measure(conf[ev], pred[ev], correct[ev], [s for s, e in zip(sources, ev) if e], t))
    return {s: {k: float(np.mean([f[s][k] for f in folds if f[s][k] is not None])) for k in folds[0][s]} for s in folds[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--target", type=float, default=0.98)
    ap.add_argument("--cache", type=Path, default=Path("runs/selective_val.pt"))
    a = ap.parse_args()
    d = score_val(a.model, a.cache)
    y = d["y"].numpy()
    sources = d["source"]
    in_a, far = halves(d["group"]), beyond_near(d)
    results = {}
    for views in ("plain", "mirrored"):
        lg = d["logits"] if views == "plain" else (d["logits"] + d["logits_flip"]) / 2
        p = torch.softmax(lg / d["T"], 1).numpy()
        conf, pred = p.max(1), p.argmax(1)
        conf = np.where(far, 0.0, conf)  # cells beyond the near distance are flagged whatever their confidence
        correct = (pred == y).astype(float)
        for per_class in (False, True):
            name = f"{views}, {'per-class' if per_class else 'one'} threshold"
            whole = fit_rule(conf, pred, correct, len(d["classes"]), a.target, per_class)
            results[name] = {"accuracy": float(correct.mean()),
                             "cross_fitted": cross_fitted(conf, pred, correct, sources, in_a, len(d["classes"]), a.target, per_class),
                             "thresholds": dict(zip(d["classes"], np.round(whole, 3).tolist()))}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
