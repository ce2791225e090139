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


@dataclass(frozen=True)
class Tones:
    """A field's background and red-cell colours (RGB, 0-255); `red_cells` None when too few cell pixels."""

    background: tuple[float, float, float]
    red_cells: tuple[float, float, float] | None


def field_tones(rgb: np.ndarray) -> Tones:
    """The background (wbc.image.stain.background_colour) and the median colour of the cell pixels (darker than
    GREY_CELLS of the background's brightness) less their darkest tenth: in a smear field, the red cells."""
    bg = background_colour(rgb).astype(np.float64)
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / SAMPLE_PIXELS)))
    px = rgb[::step, ::step].reshape(-1, 3).astype(np.float32)
    lum = px.mean(1)
    cells = px[(lum < GREY_CELLS * bg.mean()) & (lum > FILL_LIGHT)]
    if len(cells) < MIN_CELL_SHARE * len(px):
        return Tones(tuple(bg), None)
    cl = cells.mean(1)
    return Tones(tuple(bg), tuple(np.median(cells[cl > np.quantile(cl, NUCLEI)], axis=0).astype(np.float64)))


def departure(tones: Tones, ref: Tones) -> tuple[float, float | None]:
    """(how far the background's channels lie from the reference's, how far the background-to-red-cell contrast's do):
    the largest absolute log ratio over the channels."""
    bg, rbg = np.maximum(tones.background, 1.0), np.asarray(ref.background)
    gain = float(np.abs(np.log(bg / rbg)).max())
    if tones.red_cells is None or ref.red_cells is None:
        return gain, None
    contrast = np.log((bg / np.maximum(tones.red_cells, 1.0)) / (rbg / np.asarray(ref.red_cells)))
    return gain, float(np.abs(contrast).max())


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
    gain, contrast = departure(tones, ref)
    if gain <= gain_limit and (contrast is None or contrast <= contrast_limit):
        return None
    return tone_curves(tones, ref)
