"""Which confidence score ranks the model's answers best, chosen on validation only.

    python scripts/confidence_scores.py MODEL [--target 0.995] [--cache runs/selective_val.pt] [--out F]

A model trained with label smoothing caps its top probability (here at about 0.97), so the right and the wrong
answers crowd into the last few hundredths and the softmax ranks them poorly (Xia & Bouganis 2025, "label
smoothing degrades selective classification"). Post-hoc scores from the same logits can rank better: the
margin between the two best classes, and the largest centred logit over the logits' p-norm (Cattelan & Silva
2024, "How to fix a broken confidence estimator", MaxLogit-pNorm). All are functions of the probabilities, so
the exported ONNX model needs no change. Each is scored on the model's own validation cells (cached by
scripts/selective.py): the area under the risk-coverage curve per source, and the review rule as shipped (one
threshold for `target` accuracy, cells beyond the near distance flagged whatever their score) fitted on half of
the validation groups and measured on the other half, both ways. No test split is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from selective import beyond_near, cross_fitted, halves, score_val

from wbc.evaluation.risk import risk_coverage


def pnorm(logits: np.ndarray, p: float) -> np.ndarray:
    z = logits - logits.mean(1, keepdims=True)
    return z.max(1) / np.linalg.norm(z, ord=p, axis=1)


def scores(logits: torch.Tensor, t: float) -> dict[str, np.ndarray]:
    z = logits.numpy().astype(np.float64)
    p = torch.softmax(logits / t, 1).numpy()
    top2 = np.sort(z, 1)[:, -2:]
    out = {"softmax (shipped)": p.max(1), "margin": top2[:, 1] - top2[:, 0],
           "negative entropy": (p * np.log(np.clip(p, 1e-12, 1))).sum(1)}
    for q in (1, 2, 3, 4, 6, 8):
        out[f"max logit / {q}-norm"] = pnorm(z, q)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--target", type=float, default=0.995)
    ap.add_argument("--cache", type=Path, default=Path("runs/selective_val.pt"))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    d = score_val(a.model, a.cache)
    y = d["y"].numpy()
    sources = d["source"]
    in_a, far = halves(d["group"]), beyond_near(d)
    pred = d["logits"].argmax(1).numpy()
    correct = (pred == y).astype(float)
    results = {"accuracy": float(correct.mean()), "cells": len(y), "target": a.target, "scores": {}}
    for name, conf in scores(d["logits"], d["T"]).items():
        flagged_conf = np.where(far, -np.inf, conf)
        aurc = {s: risk_coverage(correct[m], -conf[m])["aurc"]
                for s in sorted(set(sources)) + ["all"] for m in [np.array([s in (x, "all") for x in sources])]}
        cross = cross_fitted(flagged_conf, pred, correct, sources, in_a, len(d["classes"]), a.target, False)
        results["scores"][name] = {"aurc": aurc, "cross_fitted": cross}
        print(f"{name:24s} AURC " + " ".join(f"{s} {v:.4f}" for s, v in aurc.items())
              + " | unflagged/right " + " ".join(f"{s} {c['unflagged']:.3f}/{c['unflagged_right']:.4f}" for s, c in cross.items()))
    if a.out:
        a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
