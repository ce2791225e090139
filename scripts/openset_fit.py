"""Give a trained model file its open-set statistics and operating point (what `wbc train` now does at its end).

    python scripts/openset_fit.py MODEL --out NEW_MODEL [--manifest NAME=FILE ...] [--near-quantile Q --review-accuracy A]

The training and validation cells are the model's own (its sources and split manifests, as recorded in the
file; a manifest that moved is given with --manifest and must hash as recorded). Statistics from the training
cells; near/far distances and the confidence threshold from validation, at the quantiles that
scripts/openset_loso.py chose on held-out sources (wbc.training.openset.OpenSetConfig).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from wbc._util.progress import NullProgress
from wbc.models.io import load_model_file, save_model
from wbc.training.config import TrainConfig
from wbc.training.openset import OpenSetConfig
from wbc.training.train import (
    fit_openset,
    loader,
    own_data,
    predict_logits,
    review_threshold,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--manifest", action="append", default=[])
    d = OpenSetConfig()
    ap.add_argument("--near-quantile", type=float, default=d.near_quantile)
    ap.add_argument("--far-quantile", type=float, default=d.far_quantile)
    ap.add_argument("--far-factor", type=float, default=d.far_factor)
    ap.add_argument("--review-accuracy", type=float, default=TrainConfig().review_accuracy)
    a = ap.parse_args()
    model, meta = load_model_file(a.model)
    info = meta["info"]
    cfg, train, val, infos = own_data(info, a.manifest)
    ocfg = OpenSetConfig(a.near_quantile, a.far_quantile, a.far_factor)
    figures = fit_openset(model, train, val, infos, cfg, torch.device("cpu"), NullProgress(), ocfg)
    logits, yv = predict_logits(model, loader(val, model.spec.classes, infos, cfg, augment=False), torch.device("cpu"), NullProgress(), "val")
    model.spec.review_threshold = review_threshold(torch.softmax(logits / model.spec.temperature, 1), yv, a.review_accuracy)
    info.setdefault("metrics", {}).setdefault("val", {})["openset"] = figures | {"config": asdict(ocfg), "review_accuracy": a.review_accuracy,
                                                                                "review_threshold": model.spec.review_threshold}
    save_model(model, a.out, info)
    print(json.dumps(info["metrics"]["val"]["openset"], indent=2))


if __name__ == "__main__":
    main()
