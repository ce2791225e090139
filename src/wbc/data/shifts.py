"""Other labs' images, made from ours: the colour casts, stains and crops that broke the stain rule and
the scale (issue 17) applied to real cells, so robustness is measured (scripts/no_cell_dropped.py) and
tested (tests/test_shifts.py) on cells whose truth is known. None of these is fitted on anything."""

from __future__ import annotations

import numpy as np

from wbc.image.framing import crop_square
from wbc.image.stain import cell_centre, stain_mask


def shifted(rgb: np.ndarray, how: str) -> np.ndarray:
    """`rgb` as another lab might show it (`how`: one of SHIFTS)."""
    x = rgb.astype(np.float32)
    if how == "yellow":
        x = x * np.array([1.0, 0.97, 0.72]) + np.array([10, 8, 0])
    elif how == "cyan":
        x = x * np.array([0.72, 0.98, 1.0]) + np.array([0, 6, 12])
    elif how == "grey_background":
        bright = x.mean(2, keepdims=True) > np.percentile(x.mean(2), 70)
        x = np.where(bright, x.mean(2, keepdims=True) * 0.85, x)
    elif how == "greyscale":
        x = np.repeat(x.mean(2, keepdims=True), 3, axis=2)
    elif how == "red_purple_nucleus":
        x = x * np.array([1.08, 0.95, 0.80])
    elif how == "tight_crop":
        cx, cy = cell_centre(rgb)
        m = stain_mask(rgb, 40)
        ys, xs = np.nonzero(m)
        side = int(max(32, 1.5 * max(np.ptp(xs) if len(xs) else 0, np.ptp(ys) if len(ys) else 0)))
        return crop_square(rgb, cx, cy, side)
    return np.clip(x, 0, 255).astype(np.uint8)


SHIFTS = ("none", "yellow", "cyan", "grey_background", "greyscale", "red_purple_nucleus", "tight_crop")
