"""How windows of a smear with no white cell in them are answered, and which carry a review flag.

    python scripts/no_cell_windows.py [--fields 80] [--out reports/no_cell_windows.json]

Windows of 320x320 px (six a field, overlapping) from the first BCCD train fields whose WBC boxes touch none of them:
red cells and platelets only, each sent alone at BCCD's 14 px/um. The cost side of flagging a "no white cell" that
holds some stain (`wbc.infer.predictor.SMALL_STAIN`): a platelet is stained too. No test split is read.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np

import wbc
from wbc.count.voc import read_boxes, read_ids
from wbc.data.locate import resolve_bccd
from wbc.image.decode import decode


def windows(root: Path, fields: int) -> list[np.ndarray]:
    out = []
    for i in read_ids(root, "train")[:fields]:
        rgb = decode(root / "JPEGImages" / f"{i}.jpg")
        wbcs = [b for b in read_boxes(root / "Annotations" / f"{i}.xml") if b.kind == "WBC"]
        for y0 in (0, 160):
            for x0 in (0, 160, 320):
                if not any(b.x1 > x0 and b.x0 < x0 + 320 and b.y1 > y0 and b.y0 < y0 + 320 for b in wbcs):
                    out.append(np.ascontiguousarray(rgb[y0 : y0 + 320, x0 : x0 + 320]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fields", type=int, default=80)
    ap.add_argument("--out", default="reports/no_cell_windows.json")
    args = ap.parse_args()
    wins = windows(Path(resolve_bccd(None)), args.fields)
    answers = wbc.load_model().predict(wins, px_per_um=14.0)
    kinds = collections.Counter(
        "no white cell, unflagged" if a.label == "NO_WHITE_CELL" and not a.review else
        f"no white cell, flagged: {a.review_reason.split(':')[0]}" if a.label == "NO_WHITE_CELL" else
        f"{a.label}, {'flagged' if a.review else 'unflagged'}" for a in answers)
    report = {"windows": len(wins), "answered": dict(kinds.most_common())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
