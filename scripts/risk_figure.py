"""One risk-coverage picture from several `wbc evaluate --json` files or reports' metrics.json (for the docs).

    python scripts/risk_figure.py --out docs/img/risk_coverage.png "Kaggle TEST=reports/k.json" "PBC test=reports/p.json" ...

Each curve: the accuracy of the cells left unflagged as the flag is made stricter; the dot: the shipped flag.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wbc._util.io import atomic_save  # noqa: E402
from wbc.evaluation.risk import plot_risk_coverage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="+", help="NAME=metrics.json (the first split in the file)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    curves, points = {}, {}
    for item in a.sets:
        name, path = item.split("=", 1)
        r = json.loads(Path(path).read_text())
        r = r if "review" in r else next(iter(r.values()))  # a report's metrics.json, or `wbc evaluate --json` by split
        rv = r["review"]
        curves[name] = rv["risk_coverage"]
        if rv["accuracy_unflagged"] is not None:
            points[name] = (rv["unflagged_share"], rv["accuracy_unflagged"])
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    plot_risk_coverage(ax, curves)
    for name, (cov, acc) in points.items():
        ax.plot([cov], [acc], "o", color="black", ms=4)
    ax.set_title("Risk-coverage (dots: the shipped review flag)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(a.out, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    print(a.out)


if __name__ == "__main__":
    main()
