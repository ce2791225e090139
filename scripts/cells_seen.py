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


def under_shifts(model) -> None:
    """How many cells each validation image is counted to show, under each of wbc.data.shifts' shifts, per source."""
    sys.path.insert(0, str(Path(__file__).parent))
    from colour_constancy import val_cells

    from wbc.data.shifts import SHIFTS, shifted
    from wbc.image.decode import decode

    cells = val_cells(model, 15)
    images = [decode(r.path) for r, _ in cells]
    for how in SHIFTS:
        by = collections.defaultdict(collections.Counter)
        for (r, _), x in zip(cells, images):
            by[r.source][str(model.predict(shifted(x, how))[0].cells_seen)] += 1
        print(how, {src: dict(sorted(c.items())) for src, c in sorted(by.items())}, flush=True)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--shifts"]
    model = load_model(args[0] if args else None)
    if "--shifts" in sys.argv:
        return under_shifts(model)
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
