"""The leave-one-source-out table of `scripts/loso.sh`, as markdown: per held-out source, each variant's fold
model (plain, white balance, stain normalisation) on the source it never saw.

    python scripts/loso_table.py [--runs runs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELD_OUT = {"pbc": "PBC train (Kaggle + Munich model)", "kaggle": "Kaggle TRAIN, every 16th (PBC + Munich model)",
            "munich": "Munich train (Kaggle + PBC model)"}

VARIANTS = {"no-white-balance": "none", "white-balance": "white balance", "stain-norm": "stain normalisation (Reinhard)",
            "white-balance_backbone-tf_efficientnet_lite2": "white balance, EfficientNet-Lite2"}  # loso.sh's run names; any other
# variant found is listed under its run name


def row(d: dict) -> list[str]:
    r = d["review"]
    abnormal = d.get("abnormal") or {}
    unknown = sum(a["images"] for a in abnormal.values())
    missed = sum(a["missed_unflagged"] + a["dropped_no_white_cell"] for a in abnormal.values())
    return [f"{100 * d['accuracy']:.1f}", f"{100 * d['accuracy_in_set_classes']:.1f}",
            f"{100 * r['unflagged_share']:.1f} / {100 * r['accuracy_unflagged']:.1f}" if r["accuracy_unflagged"] is not None else f"{100 * r['unflagged_share']:.1f} / -",
            f"{r['risk_coverage']['aurc']:.3f}", f"{d['ece']:.3f}",
            f"{missed} of {unknown} ({100 * missed / unknown:.1f}%)" if unknown else "-"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs")
    a = ap.parse_args()
    print("| held out (fold model) | colour step | accuracy | restricted to the set's types | unflagged / right (%) | AURC | ECE | unknown types passed unflagged |")
    print("|---|---|---|---|---|---|---|---|")
    for src, name in HELD_OUT.items():
        found = {f.stem.removeprefix(f"eval_no_{src}_"): f for f in sorted(Path(a.runs).glob(f"eval_no_{src}_*.json"))}
        for variant in [v for v in VARIANTS if v in found] + [v for v in found if v not in VARIANTS]:
            d = next(iter(json.loads(found[variant].read_text()).values()))
            print(f"| {name} | {VARIANTS.get(variant, variant)} | " + " | ".join(row(d)) + " |")


if __name__ == "__main__":
    main()
