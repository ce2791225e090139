"""Where should "a stained region too small for a nucleus" stop dropping an image? Measured on validation cells and
on images without a white cell (no test split).

    python scripts/speck_rule.py [--data ../shared/data] [--out reports/speck_rule.json]

Real cells: every validation (or `--split train`) image of each source (the shipped split manifests), framed as `wbc predict` frames a
folder (the run's scale). Not cells: 320x240 windows of BCCD train fields that hold no white-cell box (red cells and
platelets only), and noise images. For each, the largest stained area (um2) and the model's label; a nucleated
label on a stained area under the bound drops the image as "no white cell found" (wbc.infer.predictor.no_white_cell);
and each image's answer as shipped, so a not-cell answered as an unflagged known type (a silent error) is counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from wbc.count.voc import read_boxes, read_ids
from wbc.image.decode import decode
from wbc.image.framing import run_scale
from wbc.image.stain import MIN_STAINED_UM2
from wbc.infer.predictor import NON_NUCLEATED, load_model

sys.path.insert(0, str(Path(__file__).parent))
from scale_trust import SOURCES, split_rows  # noqa: E402

BOUNDS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def framed_answers(p, images, run) -> list[dict]:
    """Each image's top class, largest stained area, and its answer as shipped (label, review flag)."""
    dist: list = []
    probs, framed = p.predict_framed(images, px_per_um=run, distances=dist)
    answers = [p.to_prediction(q, "", f, d) for q, f, d in zip(probs, framed, dist)]
    return [{"label": p.classes[int(q.argmax())], "stained": round(f.stained_um2, 3), "scale": f.scale,
             "answer": [a.label, a.review]} for q, f, a in zip(probs, framed, answers)]


def field_windows(bccd: Path, limit: int = 400) -> list[np.ndarray]:
    """320x240 windows of BCCD train fields that hold no part of a white-cell box."""
    out = []
    for i in read_ids(bccd, "train"):
        rgb = decode(bccd / "JPEGImages" / f"{i}.jpg")
        wbcs = [b for b in read_boxes(bccd / "Annotations" / f"{i}.xml") if b.kind == "WBC"]
        for y0 in (0, rgb.shape[0] - 240):
            for x0 in (0, 160, rgb.shape[1] - 320):
                if not any(b.x1 > x0 and b.x0 < x0 + 320 and b.y1 > y0 and b.y0 < y0 + 240 for b in wbcs):
                    out.append(np.ascontiguousarray(rgb[y0 : y0 + 240, x0 : x0 + 320]))
        if len(out) >= limit:
            break
    return out


def noise(n: int = 40) -> list[np.ndarray]:
    g = np.random.default_rng(0)
    uniform = [g.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(n // 2)]
    gauss = [np.clip(g.normal(180, 40, (240, 320, 3)), 0, 255).astype(np.uint8) for _ in range(n - n // 2)]
    return uniform + gauss


def dropped(recs: list[dict], bound: float) -> int:
    """Images answered "no white cell found" when a nucleated label needs `bound` um2 of stain."""
    return sum(r["stained"] < MIN_STAINED_UM2 or (r["label"] not in NON_NUCLEATED and r["stained"] < bound) for r in recs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="reports/speck_rule.json")
    ap.add_argument("--split", default="val", help="val, or train (more cells; the stain rule is not learnt, the labels are)")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    a = ap.parse_args()
    p = load_model()
    result = {}
    for source in a.sources:
        paths = [r[0] for r in split_rows(Path(a.data), source, a.split)]
        result[source] = framed_answers(p, paths, run_scale(paths))
    windows = field_windows(Path(a.data) / "bccd")
    result["bccd_no_wbc"] = framed_answers(p, windows, run_scale(windows))
    result["noise"] = framed_answers(p, noise(), None)
    for name, recs in result.items():
        kind = "not cells: answered" if name in ("bccd_no_wbc", "noise") else "real cells: dropped"
        print(f"{name} ({len(recs)}), {kind} under each bound: "
              + ", ".join(f"{b:g} um2 {dropped(recs, b)}" for b in BOUNDS)
              + f"; nothing stained {sum(r['stained'] < MIN_STAINED_UM2 for r in recs)}; as shipped, answered a known type"
              f" unflagged {sum(r['answer'][0] not in ('NO_WHITE_CELL', 'UNIDENTIFIED') and not r['answer'][1] for r in recs)}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
