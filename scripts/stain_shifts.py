"""Stains and optics off the training labs': a too acidic buffer (pale nuclei, bright red cells), a too alkaline one
(everything blue), a pale and an over-stained smear (haematoxylin and eosin scaled in HED space, scikit-image), and a
phone photo through the eyepiece (the field a bright disc on black). Each of the model's validation cells (15 a class
and source) is sent alone; per source: accuracy, the unflagged answers and how many are right, and real cells
answered "no white cell" without a flag. No test split is read.

    python scripts/stain_shifts.py [MODEL] [--per-class 15]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from colour_constancy import val_cells
from skimage.color import hed2rgb, rgb2hed

from wbc.image.decode import decode
from wbc.infer.answers import NO_WHITE_CELL
from wbc.infer.predictor import load_model, shipped_model_path


def hed(k: list[float]):
    return lambda x: np.clip(hed2rgb(rgb2hed(x) * np.array(k)) * 255 + 0.5, 0, 255).astype(np.uint8)


def eyepiece(rgb: np.ndarray) -> np.ndarray:
    """The image on a black canvas 1.7x its size, cut to a disc 1.25x its shorter side across."""
    h, w = rgb.shape[:2]
    H, W = int(h * 1.7), int(w * 1.7)
    out = np.zeros((H, W, 3), np.uint8)
    out[(H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w] = rgb
    yy, xx = np.mgrid[:H, :W]
    out[(yy - H / 2) ** 2 + (xx - W / 2) ** 2 > (min(h, w) * 0.625) ** 2] = 0
    return out


SHIFTS = {"as is": lambda x: x, "acidic (H x0.4, E x1.4)": hed([0.4, 1.4, 1.0]), "alkaline (H x1.5, E x0.5)": hed([1.5, 0.5, 1.0]),
          "pale (H x0.5, E x0.5)": hed([0.5, 0.5, 1.0]), "over-stained (H x1.8, E x1.5)": hed([1.8, 1.5, 1.0]), "eyepiece": eyepiece}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(shipped_model_path()))
    ap.add_argument("--per-class", type=int, default=15)
    a = ap.parse_args()
    model = load_model(a.model)
    cells = val_cells(model, a.per_class)
    images = [decode(r.path) for r, _ in cells]
    print("| shift | source | cells | right | unflagged (right) | silent no white cell |\n|---|---|---|---|---|---|")
    for how, shift in SHIFTS.items():
        by = defaultdict(lambda: [0, 0, 0, 0, 0])
        for (r, _), x in zip(cells, images):
            p = model.predict(shift(x))[0]
            s, right = by[r.source], p.label == r.label
            s[0], s[1], s[2], s[3], s[4] = s[0] + 1, s[1] + right, s[2] + (not p.review), s[3] + (right and not p.review), s[4] + (p.label == NO_WHITE_CELL and not p.review)
        for src, (n, right, kept, kept_right, silent) in sorted(by.items()):
            print(f"| {how} | {src} | {n} | {right / n:.0%} | {kept} ({kept_right}) | {silent} |", flush=True)


if __name__ == "__main__":
    main()
