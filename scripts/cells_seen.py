"""How often an image shows more than one white cell (`Prediction.cells_seen`), and how right its answer is, on each
source's validation cells and on BCCD train/val fields by their WBC boxes: whether "several cells" should flag the
answer or only be said. No test split is read.

    python scripts/cells_seen.py [MODEL]
"""

from __future__ import annotations

import collections
import csv
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from wbc.infer.predictor import load_model
from wbc.models.files import asset_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = [("Kaggle", "split_manifest.csv", DATA / "blood-cells" / "dataset2-master" / "images"),
           ("PBC", "split_pbc.csv", DATA / "pbc"), ("Munich", "split_munich.csv", DATA / "munich-aml")]


def main() -> None:
    model = load_model(sys.argv[1] if len(sys.argv) > 1 else None)
    for name, manifest, root in SOURCES:
        with open(asset_path(manifest)) as f:
            rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
        answers = model.predict([str(root / r["path"]) for r in rows])
        by = collections.defaultdict(lambda: [0, 0, 0, 0])  # images, right, flagged, right among the unflagged
        for r, a in zip(rows, answers):
            s = by[min(a.cells_seen or 0, 2)]
            right = a.label == r["class"]
            s[0], s[1], s[2], s[3] = s[0] + 1, s[1] + right, s[2] + a.review, s[3] + (right and not a.review)
        for k, (n, right, flagged, kept) in sorted(by.items()):
            print(f"{name} val, {k if k < 2 else '2+'} cells seen: {n} images, {right / n:.1%} right, {flagged / n:.0%} flagged, "
                  f"unflagged {kept} of {n - flagged} right")
    bccd = DATA / "bccd"
    ids = [i.strip() for s in ("train", "val") for i in (bccd / "ImageSets" / "Main" / f"{s}.txt").read_text().split() if i.strip()]
    by_boxes = collections.defaultdict(list)
    for i in ids:
        objects = ET.parse(bccd / "Annotations" / f"{i}.xml").getroot().findall("object")
        by_boxes[sum(o.findtext("name") == "WBC" for o in objects)].append(str(bccd / "JPEGImages" / f"{i}.jpg"))
    for boxes, files in sorted(by_boxes.items()):
        seen = collections.Counter(min(a.cells_seen or 0, 2) for a in model.predict(files))
        print(f"BCCD train+val fields with {boxes} WBC box(es): {len(files)}, cells seen {dict(sorted(seen.items()))}")


if __name__ == "__main__":
    main()
