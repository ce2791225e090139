"""Other labs' images, made from ours: the colour casts, stains and crops that broke the stain rule and
the scale (issue 17) applied to real cells, so robustness is measured (scripts/no_cell_dropped.py) and
tested (tests/test_shifts.py) on cells whose truth is known. None of these is fitted on anything."""

from __future__ import annotations

import numpy as np

from wbc.image.framing import crop_square
from wbc.image.stain import (
    STAINED_THRESHOLD,
    background_colour,
    cell_centre,
    stain_mask,
)


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
    elif how == "dim":  # a lamp or exposure set too low: under a third of the light
        x = x * 0.3
    elif how in TONES:  # another camera's tone curve
        x = TONES[how](x)
    elif how == "cut_out":
        return cut_out(rgb)
    elif how == "tight_crop":
        cx, cy = cell_centre(rgb)
        m = stain_mask(rgb, 40)
        ys, xs = np.nonzero(m)
        side = int(max(32, 1.5 * max(np.ptp(xs) if len(xs) else 0, np.ptp(ys) if len(ys) else 0)))
        return crop_square(rgb, cx, cy, side)
    return np.clip(x, 0, 255).astype(np.uint8)


def _saturation(x: np.ndarray, k: float) -> np.ndarray:
    grey = x.mean(2, keepdims=True)
    return grey + (x - grey) * k


TONES = {"haze": lambda x: x * 0.6 + 100,  # low contrast: stray light, a condenser wide open
         "gamma_0.6": lambda x: 255 * (x / 255) ** 0.6, "gamma_1.6": lambda x: 255 * (x / 255) ** 1.6,
         "contrast_1.5": lambda x: (x - 128) * 1.5 + 128,
         "saturation_1.8": lambda x: _saturation(x, 1.8), "saturation_0.5": lambda x: _saturation(x, 0.5)}

SHIFTS = ("none", "yellow", "cyan", "grey_background", "greyscale", "red_purple_nucleus", "tight_crop", "dim", "cut_out", *TONES)


def cut_out(rgb: np.ndarray) -> np.ndarray:
    """The white cell alone on black, as segmented data sets ship their cells: its largest stained region grown by 20
    pixels (the cytoplasm; 1.8-3 um at the sources' scales), everything else black."""
    import cv2

    stain = stain_mask(rgb, STAINED_THRESHOLD).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(stain)
    if n < 2:
        return np.zeros_like(rgb)
    cell = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    cell = cv2.dilate(cell, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
    return rgb * cell[..., None]


def shifted_field(rgb: np.ndarray, how: str) -> tuple[np.ndarray, float]:
    """A whole smear field as another lab's microscope might show it, and the factor its size changed by
    (`how`: one of FIELD_SHIFTS; the cell shifts above, plus a cyan background whose red cells turn dark
    blue-grey, a pale stain, blur, other magnifications, an overexposed camera and a noisy one, `camera_SEED` a
    camera whose channels each follow a curve drawn by SEED; any of them then
    `+glass`, the field beside as much empty glass again)."""
    import cv2

    if how == "glass" or how.endswith("+glass"):  # beside as much empty glass again (a thin smear's edge): a field's
        x, f = shifted_field(rgb, how.removesuffix("glass").removesuffix("+") or "none")  # content, not its tones, moved
        return np.concatenate([x, np.broadcast_to(background_colour(x).astype(np.uint8), x.shape)], axis=1), f
    if how.startswith("camera_"):  # another camera: each channel its own gamma (0.5-2) and gain (0.75-1.05), drawn by seed
        rng = np.random.default_rng(int(how.split("_", 1)[1]))
        gamma, gain = np.exp(rng.uniform(np.log(0.5), np.log(2.0), 3)), rng.uniform(0.75, 1.05, 3)
        return np.clip(255 * gain * (rgb.astype(np.float32) / 255) ** gamma + 0.5, 0, 255).astype(np.uint8), 1.0
    if how == "cyan_dark_red":  # red cells blue-grey and darker than the background: the lab whose red cells were called WBCs
        x = rgb.astype(np.float32) / 255
        x = np.power(x, np.array([2.2, 1.25, 1.0])) * np.array([0.75, 1.0, 1.02]) + np.array([0.0, 0.02, 0.05])
        return np.clip(x * 255, 0, 255).astype(np.uint8), 1.0
    if how == "pale_stain":
        from skimage.color import hed2rgb, rgb2hed

        return np.clip(hed2rgb(rgb2hed(rgb) * np.array([0.55, 0.7, 1.0])) * 255 + 0.5, 0, 255).astype(np.uint8), 1.0
    if how == "blur":
        return cv2.GaussianBlur(rgb, (0, 0), 2.0), 1.0
    if how.startswith("exposure_"):  # an overexposed camera: every channel times the gain, clipped white
        return np.clip(rgb.astype(np.float32) * float(how.split("_", 1)[1]), 0, 255).astype(np.uint8), 1.0
    if how.startswith("noise_"):  # a camera at high gain: Gaussian noise of this sigma (grey levels), the same draw every run
        noise = np.random.default_rng(0).normal(0, float(how.split("_", 1)[1]), rgb.shape)
        return np.clip(rgb + noise, 0, 255).astype(np.uint8), 1.0
    if how.startswith("jpeg_"):  # saved at this JPEG quality (the pixels only: a file's quality is read from its bytes)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(how.split("_", 1)[1])])
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), 1.0
    if how.startswith("zoom_"):
        f = float(how.split("_", 1)[1])
        h, w = rgb.shape[:2]
        return cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC), f
    return shifted(rgb, how), 1.0


FIELD_SHIFTS = ("none", "yellow", "cyan", "cyan_dark_red", "grey_background", "greyscale", "pale_stain", "blur", "zoom_0.6", "zoom_1.5",
                "exposure_1.4", "noise_6", "glass", "cyan_dark_red+glass")
