"""Which ImageNet backbone carries across labs? A linear probe on frozen features, before any training.

    python scripts/frozen_probe.py [--backbones tf_efficientnet_lite0,tf_efficientnet_lite2] [--size 192]
                                   [--out reports/frozen_probe.json]

Each source's cells go through the shipped model's framing (its white balance and field of view, at `--size`), then
through each backbone with its ImageNet weights, frozen (global-average-pooled features). A logistic regression
(standardised features, balanced classes) is fitted on train cells (the shipped split manifests: at most 300 a class
and 8 a source image) and scored on validation cells (at most 150 a class, 6 a source image), balanced accuracy:
once on all three sources, and leave one source out (fitted on two, scored on the third's classes they share; for
Munich that is its neutrophils alone). No test split is read. A probe is not a trained model: it says which features
start nearer to other labs, a hint for what to train, not a result to ship.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from low_resolution import ASSETS, SOURCES
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

import wbc
from wbc._util.io import atomic_write_text
from wbc.data.locate import resolve_data
from wbc.image.decode import decode
from wbc.image.framing import frame
from wbc.models.classifier import CellClassifier


def cells(manifest: Path, root: Path, split: str, per_class: int, per_group: int) -> list[tuple[Path, str]]:
    """At most `per_class` cells a class and `per_group` copies of one source image, drawn at random (seed 0)."""
    rows = [r for r in csv.DictReader(manifest.open()) if r["split"] == split]
    random.Random(0).shuffle(rows)
    out, per_c, per_g = [], defaultdict(int), defaultdict(int)
    for r in rows:
        if per_c[r["class"]] < per_class and per_g[r["group"]] < per_group:
            out.append((root / r["path"], r["class"]))
            per_c[r["class"]] += 1
            per_g[r["group"]] += 1
    return out


def features(model: CellClassifier, views: torch.Tensor) -> np.ndarray:
    """The backbone's pooled features, the views scaled as the classifier scales them (its spec's mean and std)."""
    with torch.no_grad():
        return torch.cat([model.features(views[i:i + 32].float().contiguous(memory_format=torch.channels_last))
                          for i in range(0, len(views), 32)]).numpy()


def probe(train: list[tuple[np.ndarray, list[str]]], test: tuple[np.ndarray, list[str]]) -> float:
    x = np.concatenate([f for f, _ in train])
    y = [c for _, labels in train for c in labels]
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(max_iter=3000, C=0.05, class_weight="balanced").fit(scaler.transform(x), y)
    keep = [i for i, c in enumerate(test[1]) if c in set(y)]
    return float(balanced_accuracy_score([test[1][i] for i in keep], clf.predict(scaler.transform(test[0][keep]))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default="tf_efficientnet_lite0,tf_efficientnet_lite2")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--out", type=Path, default=Path("reports/frozen_probe.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    spec = wbc.load_model().spec
    spec = replace(spec, input_size=(a.size, a.size))
    data = Path(resolve_data(None)).parent
    sets = {(name, split): cells(ASSETS / manifest, data / folder, split, *((300, 8) if split == "train" else (150, 6)))
            for name, (manifest, folder) in SOURCES.items() for split in ("train", "val")}
    views = {k: torch.stack([frame(decode(p), spec).pixels for p, _ in rows]) for k, rows in sets.items()}
    report = {"size": a.size, "cells": {f"{n} {s}": len(r) for (n, s), r in sets.items()}, "backbones": {}}
    for name in a.backbones.split(","):
        start = time.perf_counter()
        model = CellClassifier(replace(spec, backbone=name)).eval().to(memory_format=torch.channels_last)  # ImageNet weights
        feats = {k: (features(model, v), [c for _, c in sets[k]]) for k, v in views.items()}
        seconds = time.perf_counter() - start
        together = {n: probe([feats[(s, "train")] for s in SOURCES], feats[(n, "val")]) for n in SOURCES}
        held_out = {n: probe([feats[(s, "train")] for s in SOURCES if s != n], feats[(n, "val")]) for n in SOURCES}
        report["backbones"][name] = {"val_balanced_accuracy": together, "leave_one_source_out": held_out,
                                     "features_seconds": round(seconds, 1)}
        print(name, {k: round(v, 3) for k, v in together.items()}, "held out:", {k: round(v, 3) for k, v in held_out.items()}, flush=True)
    atomic_write_text(a.out, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
