"""Scale rules scored from `scripts/scale_trust.py`'s records, without classifying again (validation only).

    python scripts/scale_rules.py [reports/scale_trust.json]

Two families, each picking per image between its answer at its own red-cell scale and at its run's median:
- "own unless weak and far" (shipped: fewer than 7 red cells and more than 25% off -> the run's);
- "the run's unless strong and far": every image takes the run's scale (the one the model was trained at, each
  source's median) unless its own estimate rests on at least N red cells and lies more than T off it (a source image
  really at another magnification, as some Kaggle originals are). Measured, not shipped (docs/results.md).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def pick(r: dict, run: float, off: float, n: int, family: str) -> tuple[str, bool]:
    if r["how"] != "measured":
        return tuple(r["own"])
    ratio = max(r["px"] / run, run / r["px"])
    if family == "own":
        return tuple(r["run"] if ratio > off and r["rbcs"] < n else r["own"])
    return tuple(r["own"] if ratio > off and r["rbcs"] >= n else r["run"])


def main() -> None:
    d = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "reports/scale_trust.json"))
    for source in ("kaggle", "pbc", "munich"):
        recs, run = d[source]["records"], d[source]["run_px"]
        print(source)
        for family, grid in (("own", [(1.25, 7)]), ("run", [(o, n) for o in (1.15, 1.25, 1.5) for n in (7, 10)])):
            for off, n in grid:
                answers = [pick(r, run, off, n, family) for r in recs]
                right = np.array([a[0] == r["truth"] for a, r in zip(answers, recs)])
                unflagged = np.array([not a[1] for a in answers])
                blasts = [a[0] == "BLAST" for a, r in zip(answers, recs) if r["truth"] == "BLAST"]
                print(f"  {family}'s unless {'weak' if family == 'own' else 'strong'} (N {n}) and {off:g}x off: accuracy {right.mean():.4f}, "
                      f"unflagged {unflagged.mean():.3f} at {right[unflagged].mean():.4f}" + (f", blast recall {np.mean(blasts):.3f}" if blasts else ""))


if __name__ == "__main__":
    main()
