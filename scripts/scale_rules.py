"""Scale rules scored from `scripts/scale_trust.py`'s records, without classifying again (validation only).

    python scripts/scale_rules.py [reports/scale_trust.json]

Two families, each picking per image between its answer at its own red-cell scale and at its run's median:
- "own unless weak and far": the run's when the own estimate rests on fewer than N red cells and lies more than T
  off it (shipped before the next, with N 7, T 1.25x);
- "the run's unless strong and far": every image takes the run's scale (the one the model was trained at, each
  source's median) unless its own estimate rests on at least N red cells and lies more than T off it (a source image
  really at another magnification, as some Kaggle originals are). Shipped with N 7, T 1.25x, chosen from this grid
  (`wbc.image.framing.image_scale`, docs/results.md).
"""

from __future__ import annotations

import json
import sys

import numpy as np

GRIDS = {"own": [(off, n) for off in (1.15, 1.25, 1.35) for n in (4, 6, 7, 8, 10, 1000)],
         "run": [(off, n) for off in (1.15, 1.25, 1.5) for n in (7, 10)]}


def pick(r: dict, run: float, off: float, n: int, family: str) -> tuple[str, bool]:
    """(label, flagged) of one record under a rule."""
    if r["how"] != "measured":
        return tuple(r["own"][:2])
    ratio = max(r["px"] / run, run / r["px"])
    if family == "own":
        return tuple(r["run"] if ratio > off and r["rbcs"] < n else r["own"])
    return tuple(r["own"] if ratio > off and r["rbcs"] >= n else r["run"])


def figures(answers: list, truths: list[str]) -> dict:
    """Accuracy, the unflagged share and its accuracy, and blast recall of (label, flagged, ...) answers."""
    right = np.array([a[0] == t for a, t in zip(answers, truths)])
    unflagged = np.array([not a[1] for a in answers])
    blasts = [a[0] == "BLAST" for a, t in zip(answers, truths) if t == "BLAST"]
    return {"accuracy": float(right.mean()), "unflagged": float(unflagged.mean()),
            "unflagged_right": float(right[unflagged].mean()) if unflagged.any() else None,
            "blast_recall": float(np.mean(blasts)) if blasts else None}


def main() -> None:
    d = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "reports/scale_trust.json"))
    for source in ("kaggle", "pbc", "munich"):
        if source not in d:
            continue
        recs, run = d[source]["records"], d[source]["run_px"]
        truths = [r["truth"] for r in recs]
        print(f"{source}: own scale {figures([r['own'] for r in recs], truths)['accuracy']:.4f}, "
              f"the run's for all {figures([r['run'] for r in recs], truths)['accuracy']:.4f}")
        for family, grid in GRIDS.items():
            for off, n in grid:
                answers = [pick(r, run, off, n, family) for r in recs]
                f = figures(answers, truths)
                switched = sum(a != tuple(r["own"][:2]) for a, r in zip(answers, recs))
                print(f"  {family}'s unless {'weak' if family == 'own' else 'strong'} (N {n}) and {off:g}x off: accuracy {f['accuracy']:.4f}, "
                      f"unflagged {f['unflagged']:.3f} at {f['unflagged_right']:.4f}"
                      + (f", blast recall {f['blast_recall']:.3f}" if f["blast_recall"] is not None else "") + f"; answers changed {switched}")


if __name__ == "__main__":
    main()
