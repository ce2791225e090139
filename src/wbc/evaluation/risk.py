"""What the review flag buys: risk-coverage curves (Geifman & El-Yaniv 2017) and the abnormal cells missed.

A technologist reads the flagged cells; the unflagged ones go through. The curve shows, as the flag is made
stricter, the accuracy of the cells left unflagged against the share left unflagged; its area (AURC, the mean
error over all coverages; lower is better) scores the ranking without choosing a threshold. Cells are ranked
by wbc.infer.predictor.strangeness, the same number the shipped flag thresholds at 1.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from wbc.infer.answers import NO_WHITE_CELL, UNIDENTIFIED


def risk_coverage(correct: np.ndarray, strangeness: np.ndarray, points: int = 50) -> dict:
    """Accuracy of the `k` least strange cells for every k; the area under the error curve; a sampled curve."""
    order = np.argsort(strangeness, kind="stable")
    ok = correct[order].astype(float)
    n = len(ok)
    if n == 0:
        return {"aurc": None, "curve": []}
    acc = np.cumsum(ok) / np.arange(1, n + 1)
    picks = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return {"aurc": float(np.mean(1 - acc)), "curve": [[float((k + 1) / n), float(acc[k])] for k in picks]}


def abnormal_figures(predictions: list) -> dict:
    """Cells of a type the model lacks (blasts to a normal-type model, ...): each must come back UNIDENTIFIED or
    flagged. Missed: an unflagged known type (a silent error) or NO_WHITE_CELL (out of the differential, flagged or not)."""
    n = len(predictions)
    unflagged = sum(p.label not in (UNIDENTIFIED, NO_WHITE_CELL) and not p.review for p in predictions)
    dropped = sum(p.label == NO_WHITE_CELL for p in predictions)
    return {"images": n, "unidentified": sum(p.label == UNIDENTIFIED for p in predictions),
            "flagged": sum(p.review and p.label != UNIDENTIFIED for p in predictions),
            "missed_unflagged": unflagged, "dropped_no_white_cell": dropped,
            "missed_share": (unflagged + dropped) / n if n else None,
            "answered_as": dict(Counter(p.label for p in predictions).most_common())}


def plot_risk_coverage(ax, curves: dict[str, dict], operating: dict[str, tuple[float, float]] | None = None) -> None:
    for name, rc in curves.items():
        if rc["curve"]:
            c = np.array(rc["curve"])
            ax.plot(c[:, 0], c[:, 1], label=f"{name} (AURC {rc['aurc']:.3f})")
    for name, (cov, acc) in (operating or {}).items():
        ax.plot([cov], [acc], "o", color="black")
        ax.annotate(f"shipped flag: {cov:.0%} unflagged, {acc:.1%} right", (cov, acc), textcoords="offset points", xytext=(-10, -14), ha="right", fontsize=8)
    ax.set_xlabel("share of cells left unflagged (coverage)")
    ax.set_ylabel("accuracy of the unflagged cells")
    ax.set_title("Risk-coverage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
