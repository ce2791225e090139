"""Greyscale images: does the no-white-cell rule keep platelets and still turn red cells away?

    python scripts/grey_platelets.py [--out reports/grey_platelets.json]

In a greyscale image nothing can be read as stain, so `wbc.image.stain.largest_stained_um2` measures the largest
solid dark blob (under 0.6 of the background, after a 1 um opening). A platelet is dark only in its granules, and
the opening erased it: the image read as "nothing stained" and the cell was answered "no white cell found". The rule
now blurs the grey image over about 1 um first. This script compares both readings on train images only: PBC train
platelets and basophils (450) and 600 PBC train cells of every type, made grey, at PBC's scale; and, as what must
still read as nothing, windows of BCCD train fields that hold only red cells (no WBC or platelet box within 40 px),
made grey, at BCCD's scale (a printed page: tests/test_no_white_cell.py).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import cv2
import numpy as np

from wbc._util.io import atomic_write_text
from wbc.count.voc import read_boxes, read_ids
from wbc.data.locate import resolve_bccd, resolve_data
from wbc.data.shifts import shifted
from wbc.image.decode import decode
from wbc.image.stain import MIN_STAINED_UM2, largest_stained_um2

PBC_PX, BCCD_PX = 11.0, 14.0


def unblurred_um2(rgb: np.ndarray, px_per_um: float) -> float:
    """The grey reading before the blur (wbc <= 2026-12-05)."""
    h, w = rgb.shape[:2]
    step = max(1, round(min(w, h) / 400))
    g = rgb[::step, ::step, 1]
    k = max(3, int(px_per_um / step) | 1)
    mask = cv2.morphologyEx((g < 0.6 * float(np.percentile(g, 90))).astype(np.uint8), cv2.MORPH_OPEN,
                            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return 0.0 if n <= 1 else float(stats[1:, cv2.CC_STAT_AREA].max() * step * step / px_per_um**2)


def red_cell_windows(bccd: Path, fields: int = 100) -> list[np.ndarray]:
    out = []
    for i in read_ids(bccd, "train")[:fields]:
        rgb = decode(bccd / "JPEGImages" / f"{i}.jpg")
        others = [b for b in read_boxes(bccd / "Annotations" / f"{i}.xml") if b.kind in ("WBC", "Platelets")]
        for y0 in range(0, rgb.shape[0] - 319, 80):
            for x0 in range(0, rgb.shape[1] - 319, 80):
                if not any(x0 - 40 <= b.centre[0] < x0 + 360 and y0 - 40 <= b.centre[1] < y0 + 360 for b in others):
                    out.append(np.ascontiguousarray(rgb[y0 : y0 + 320, x0 : x0 + 320]))
    return out


def read_as_nothing(images: list[np.ndarray], px: float) -> dict:
    return {"images": len(images), "unblurred": sum(unblurred_um2(g, px) < MIN_STAINED_UM2 for g in images),
            "blurred": sum(largest_stained_um2(g, px) < MIN_STAINED_UM2 for g in images),
            "largest_um2_unblurred": round(max((unblurred_um2(g, px) for g in images), default=0.0), 3),
            "largest_um2_blurred": round(max((largest_stained_um2(g, px) for g in images), default=0.0), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/grey_platelets.json"))
    a = ap.parse_args()
    pbc = Path(resolve_data(None)).parent / "pbc" / "train"
    granular = sorted((pbc / "PLATELET").glob("*.jpg")) + sorted((pbc / "BASOPHIL").glob("*.jpg"))[:50]
    every = sorted(pbc.glob("*/*.jpg"))
    random.Random(0).shuffle(every)
    grey = lambda files: [shifted(decode(f), "greyscale") for f in files]  # noqa: E731
    table = {"pbc_train_platelets_basophils": read_as_nothing(grey(granular), PBC_PX),
             "pbc_train_600_every_type": read_as_nothing(grey(every[:600]), PBC_PX),
             "bccd_train_red_cells_only": read_as_nothing(grey(red_cell_windows(Path(resolve_bccd(None)))), BCCD_PX)}
    for name, row in table.items():
        print(f"{name:32s} read as nothing stained: {row['unblurred']:4d} -> {row['blurred']:4d} of {row['images']} "
              f"(largest blob {row['largest_um2_unblurred']} -> {row['largest_um2_blurred']} um2)")
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
