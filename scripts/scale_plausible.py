"""How wide the stained cell is at the red-cell scale, and what a limit on it catches (issue 17 item 4).

    python scripts/scale_plausible.py [--per-class 30] [--out reports/scale_plausible.json]

Train cells of the shipped model's sources (their split manifests; no validation or test split read):
1. the largest stained region's extent at the source's own scale: how wide a real cell's stain gets;
2. each cell cut as a tight crop (`wbc.data.shifts`: no whole red cell left): the scale the crop's "red cells"
   give against the true one, and the stained extent at that scale;
3. whole images: the same, so a limit that catches the crops' bad estimates is seen to spare good ones.
A limit is a candidate for `wbc.image.scale.MAX_STAINED_EXTENT_UM` when it lies above every real cell's extent
(1) and turns down bad crop estimates (under 0.67x the truth) without good ones (0.8-1.25x).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from colour_constancy import split_cells

from wbc._util.io import atomic_write_text
from wbc.data.shifts import shifted
from wbc.image.decode import decode
from wbc.image.scale import estimate_scale
from wbc.image.stain import neutral_background, stained_extent_px
from wbc.infer.predictor import load_model

LIMITS = (20.0, 22.0, 25.0, 28.0)


def measure(rgb: np.ndarray, true: float) -> dict:
    rgb = neutral_background(rgb)  # as the shipped model frames (white_balance_image)
    s = estimate_scale(rgb)
    extent = stained_extent_px(rgb)
    return {"ratio": s.px_per_um / true if s.found else None, "rbcs": s.rbcs,
            "extent_at_measured": extent / s.px_per_um if s.found else None, "extent_at_true": extent / true}


def limits_table(rows: list[dict]) -> dict:
    found = [r for r in rows if r["ratio"] is not None]
    out = {"images": len(rows), "measured": len(found), "bad_under_0.67": sum(r["ratio"] < 0.67 for r in found)}
    for lim in LIMITS:
        off = [r for r in found if r["extent_at_measured"] > lim]
        out[f"limit_{lim:g}"] = {"turned_down": len(off), "bad_caught": sum(r["ratio"] < 0.67 for r in off),
                                 "good_turned_down": sum(0.8 <= r["ratio"] <= 1.25 for r in off)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("reports/scale_plausible.json"))
    a = ap.parse_args()
    whole, crops = [], []
    for r, true in split_cells(load_model(), a.per_class, "train", 1):
        rgb = decode(r.path)
        whole.append({"source": r.source, "label": r.label, **measure(rgb, true)})
        crops.append({"source": r.source, "label": r.label, **measure(shifted(rgb, "tight_crop"), true)})
    extents = np.array([r["extent_at_true"] for r in whole])
    per_class = defaultdict(list)
    for r in whole:
        per_class[r["label"]].append(r["extent_at_true"])
    out = {"extent_at_true_um": {"p50": float(np.median(extents)), "p99": float(np.percentile(extents, 99)), "max": float(extents.max()),
                                 "per_class_max": {k: round(float(max(v)), 1) for k, v in sorted(per_class.items())}},
           "tight_crops": limits_table(crops), "whole_images": limits_table(whole)}
    atomic_write_text(a.out, json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
