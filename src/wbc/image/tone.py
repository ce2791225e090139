"""A smear field's tone curves, channel by channel, mapped onto a reference lab's: another camera's gain, gamma and
white balance move each channel along its own monotone curve, and a curve through two points every smear shows (the
background and the red cells) undoes it whatever else the field holds. A cyan background whose red cells turn dark
blue-grey (a red channel at gamma 2.2) made the detector call red cells white cells and the red cells' sizes give a
wrong scale; read through these curves it counts as at home (docs/results.md, session 26). Histogram matching was
measured first and rejected: it matches the field's content too, and a field beside empty glass had red cells made
of its background."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wbc.image.stain import GREY_CELLS, background_colour, is_greyscale, washed_out

FILL_LIGHT = 20  # darker than this, fill or a cut-out's surround: no cell
MIN_CELL_SHARE = 0.03  # fewer cell pixels than this: no red cells to anchor on, the background's gain alone
NUCLEI = 0.1  # the darkest tenth of cell pixels left out: nuclei and platelets, not red cells
GAMMA_RANGE = (0.4, 2.5)
SAMPLE_PIXELS = 250_000  # the pixels read (a slide at about this many)
RULER_PIXELS = 8_000  # ... for the ruler's question, asked of every image `predict` reads (a Kaggle image about 0.8 ms)


@dataclass(frozen=True)
class Tones:
    """A field's background and red-cell colours (RGB, 0-255); `red_cells` None when too few cell pixels."""

    background: tuple[float, float, float]
    red_cells: tuple[float, float, float] | None


BCCD_TONES = Tones(background=(202.0, 204.0, 199.0), red_cells=(175.0, 152.0, 160.0))  # BCCD train's medians (scripts/field_tones.py)
# Each training lab's tones (the medians of 200 train images) and its own spread: limits on `departure` from them at
# about the 99th percentile of 300 train images (Munich's background at its largest, 0.37: its own lab shows darker grey
# glass). Kaggle's lab is BCCD's: BCCD's tones (Kaggle's own train at most 0.125 from them). (docs/results.md, session 30)
SOURCE_TONES = {"kaggle": (BCCD_TONES, 0.13, 0.15),
                "pbc": (Tones((255.0, 228.0, 202.0), (203.0, 165.0, 167.0)), 0.15, 0.20),
                "munich": (Tones((242.0, 237.0, 235.0), (193.0, 156.5, 191.0)), 0.38, 0.65)}


def field_tones(rgb: np.ndarray, pixels: int = SAMPLE_PIXELS) -> Tones:
    """The background (wbc.image.stain.background_colour) and the median colour of the cell pixels (darker than
    GREY_CELLS of the background's brightness) less their darkest tenth: in a smear field, the red cells."""
    bg = background_colour(rgb).astype(np.float64)
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / pixels)))
    px = rgb[::step, ::step].reshape(-1, 3).astype(np.float32)
    lum = px.mean(1)
    cells = px[(lum < GREY_CELLS * bg.mean()) & (lum > FILL_LIGHT)]
    if len(cells) < MIN_CELL_SHARE * len(px):
        return Tones(tuple(bg), None)
    cl = cells.mean(1)
    lighter = cl > np.quantile(cl, NUCLEI)  # none in a flat image (a hazed crop, sampled coarsely): all of them
    return Tones(tuple(bg), tuple(np.median(cells[lighter] if lighter.any() else cells, axis=0).astype(np.float64)))


def departure(tones: Tones, ref: Tones) -> tuple[float, float | None]:
    """(how far the background's channels lie from the reference's, how far the background-to-red-cell contrast's do):
    the largest absolute log ratio over the channels."""
    bg, rbg = np.maximum(tones.background, 1.0), np.asarray(ref.background)
    gain = float(np.abs(np.log(bg / rbg)).max())
    if tones.red_cells is None or ref.red_cells is None:
        return gain, None
    contrast = np.log((bg / np.maximum(tones.red_cells, 1.0)) / (rbg / np.asarray(ref.red_cells)))
    return gain, float(np.abs(contrast).max())


def within(tones: Tones, ref: Tones, gain_limit: float, contrast_limit: float) -> bool:
    """`tones` lie within a lab's own spread around its tones `ref`."""
    gain, contrast = departure(tones, ref)
    return gain <= gain_limit and (contrast is None or contrast <= contrast_limit)


def tone_curves(tones: Tones, ref: Tones) -> np.ndarray:
    """3 x 256 uint8 look-up tables, one a channel: out = 255 k (x / 255)^g through (background -> the reference's
    background) and (red cells -> the reference's red cells); gain alone (g = 1) in a channel where the red cells are
    not darker than the background, or unknown."""
    luts = np.empty((3, 256), np.uint8)
    x = np.arange(256) / 255
    for c in range(3):
        b, rb = max(tones.background[c], 1.0) / 255, ref.background[c] / 255
        g = 1.0
        if tones.red_cells is not None and ref.red_cells is not None:
            r, rr = max(tones.red_cells[c], 1.0) / 255, ref.red_cells[c] / 255
            if b - r > 0.04 and rb > rr:
                g = float(np.clip(np.log(rb / rr) / np.log(b / r), *GAMMA_RANGE))
        luts[c] = np.clip(255 * (rb / b**g) * x**g + 0.5, 0, 255).astype(np.uint8)
    return luts


def mapped(rgb: np.ndarray, luts: np.ndarray | None) -> np.ndarray:
    """`rgb` through `luts` (tone_curves), or as it is (None)."""
    if luts is None:
        return rgb
    out = np.empty_like(rgb)
    for c in range(3):
        out[..., c] = cv2.LUT(np.ascontiguousarray(rgb[..., c]), luts[c])
    return out


def curves_towards(rgb: np.ndarray, ref: Tones, gain_limit: float, contrast_limit: float) -> np.ndarray | None:
    """The curves that bring `rgb` to `ref`, or None when it lies within the reference's own spread (the background
    within `gain_limit`, the contrast within `contrast_limit`: a field of the reference's own lab is read as it is),
    is greyscale (no channels to map) or overexposed (a clipped background has no curve to undo: BCCD val at 1.4x
    exposure mapped lost white cells and gained phantoms, WBC precision 0.935 -> 0.876)."""
    if is_greyscale(rgb) or washed_out(rgb):
        return None
    tones = field_tones(rgb)
    return None if within(tones, ref, gain_limit, contrast_limit) else tone_curves(tones, ref)


def curves_for_ruler(rgb: np.ndarray, checked: bool = False) -> np.ndarray | None:
    """The curves onto BCCD's tones for an image whose tones lie outside every training lab's spread (SOURCE_TONES),
    the image the red-cell ruler (wbc.image.scale) then reads; None for an image within any lab's, greyscale or
    overexposed (read as it is). The ruler was made on BCCD's lab: under a cyan cast with dark blue-grey red cells a
    whole field read as it is measured 11 px/um for 14 (BCCD val, `wbc predict`), and its white cells were named right
    75% of the time for 91% at home. Each lab's own images are read as they are, whatever their colours. `checked`:
    the caller has found the image neither greyscale nor overexposed."""
    if not checked and (is_greyscale(rgb) or washed_out(rgb)):
        return None
    tones = field_tones(rgb, RULER_PIXELS)
    if any(within(tones, ref, g, c) for ref, g, c in SOURCE_TONES.values()):
        return None
    return tone_curves(tones, BCCD_TONES)
