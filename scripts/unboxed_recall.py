"""How much the ignore regions matter: recall of the red cells and platelets BCCD left unboxed.

    python scripts/unboxed_recall.py runs/detector/detector.safetensors runs/detector_penalise/detector.safetensors

BCCD's val boxes are as incomplete as its train boxes, so val mAP cannot show what training with
ignore regions buys (a detector that learned to skip unboxed cells is *not* punished for it on
val). This measures it directly on the val fields: the cells the classic detector finds that no
annotated box covers (the same rule that makes the training ignore regions), and the share of them
each detector finds at its own operating thresholds (fitted on val by train-detector the same way
for every run), beside its recall of the annotated boxes. `--shared-thresholds` uses the shipped
detector's thresholds for every model instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wbc.count.detector import Detector, shipped_detector_path
from wbc.count.train_detector import load_fields
from wbc.count.voc import Box, iou
from wbc.data.locate import resolve_data


def recall(found: list[Box], wanted: list[Box], thr: float) -> tuple[int, int]:
    hits = sum(any(f.kind == w.kind and iou(f, w) >= thr for f in found) for w in wanted)
    return hits, len(wanted)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--bccd", default=str(Path(resolve_data(None)).parent / "bccd"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--shared-thresholds", action="store_true")
    a = ap.parse_args()
    shared = Detector(shipped_detector_path()).spec.score_threshold
    spec = Detector(a.models[0]).spec
    fields = load_fields(a.bccd, a.split, spec, ignore=True)
    print(f"{a.split}: {len(fields)} fields")
    for path in a.models:
        det = Detector(path)
        thresholds = shared if a.shared_thresholds else det.spec.score_threshold
        rows = {}
        for kind in ("RBC", "Platelets"):
            k = spec.classes.index(kind)
            boxed, unboxed = [0, 0], [0, 0]
            for f in fields:
                found = [b for b in det.boxes(f.rgb) if b.kind == kind and b.score >= thresholds[kind]]
                truth = [Box(kind, *b[1:]) for b in f.boxes if b[0] == k]
                extra = [Box(kind, cx - r, cy - r, cx + r, cy + r) for c, cx, cy, r in f.ignore if c == k]
                for acc, (h, n) in ((boxed, recall(found, truth, 0.5)), (unboxed, recall(found, extra, 0.3))):
                    acc[0] += h
                    acc[1] += n
            rows[kind] = f"boxed {boxed[0]}/{boxed[1]} ({boxed[0] / max(1, boxed[1]):.1%}), unboxed {unboxed[0]}/{unboxed[1]} ({unboxed[0] / max(1, unboxed[1]):.1%})"
        print(f"{path} (thresholds {thresholds}): " + "; ".join(f"{k} {v}" for k, v in rows.items()), flush=True)


if __name__ == "__main__":
    main()
