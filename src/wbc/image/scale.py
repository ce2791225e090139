"""How many pixels a micrometre an image has, measured from its red cells.

Red cells are the one ruler every blood smear carries: about 7.5 um across whatever the
microscope, camera or file size. We find them as circles (OpenCV's HOUGH_GRADIENT_ALT on the
green channel, where their rims contrast most, with the stained white cell painted over so its
edges cast no votes), keep the outermost of concentric circles (the central pallor makes an inner
ring), move each radius to the steepest rise of the median radial profile (the cell's outer edge,
also on blurred images) and take the median diameter.

Calibration: the diameters are scaled by `RBC_BOX_FACTOR` so that they match the RBC boxes human
annotators drew on BCCD (train list: median box / estimate = 1.155, IQR 1.10-1.20), i.e. "RBC
diameter" means what a person boxing the cell would measure. Spread measured per source (`wbc data
scale`, median [5th-95th percentile] of 80 images): Kaggle 320x240 crops 6.81 [5.39-7.71], BCCD
640x480 fields 13.88 [11.97-15.06], PBC CellaVision 360x363 crops 11.04 [10.14-12.58]. Measured
by hand on zoomed crops with a pixel ruler: a PBC red cell 82 px across (10.9 px/um), a Kaggle one
49 px (6.5 px/um); tests/test_scale.py holds the estimate to those.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wbc.image.decode import decode
from wbc.image.stain import neutral_background, stain_mask, stained_extent_px
from wbc.image.tone import curves_for_ruler, mapped

RBC_DIAMETER_UM = 7.5
RBC_BOX_FACTOR = 1.155  # estimate -> annotated box size (BCCD train)
WORK_WIDTH = 320  # circles are searched at this width: fast, and radius limits in relative terms
MIN_RBCS = 3  # fewer circles than this: no estimate
MAX_STAINED_EXTENT_UM = 25.0  # a red-cell scale that makes the stained cell wider than this is not believed: the largest
# stained region of 420 train cells (three sources, all types, their source's scale) spans at most 22.3 um. In tight crops
# the "red cells" found are fragments and granules: 73 of 223 train crops measured at under 0.67x the true scale (the
# cell reached the network at a third of its size), 52 of them beyond this limit against 2 measured right; of 420 whole
# train images it turns down 3 estimates, 2 of them under 0.67x the truth (scripts/scale_plausible.py)


@dataclass
class Scale:
    px_per_um: float | None  # None when too few red cells were found
    rbcs: int  # circles the estimate rests on

    @property
    def found(self) -> bool:
        return self.px_per_um is not None


def _circles(rgb: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(circles x, y, r at the working width, the working factor, the working green channel).
    A circle holding stained pixels is a white cell's outline (or a platelet's host), not a red cell."""
    h, w = rgb.shape[:2]
    f = WORK_WIDTH / w
    small = cv2.resize(rgb, (WORK_WIDTH, max(8, round(h * f))), interpolation=cv2.INTER_AREA)
    valid = np.maximum(np.maximum(small[..., 0], small[..., 1]), small[..., 2]) > 25  # not the black fill of rotated
    # crops (20x faster than small.max(2))
    if valid.sum() < 0.2 * valid.size:
        return np.zeros((0, 3), np.float32), f, small[..., 1]
    raw = stain_mask(small, 30).astype(np.uint8)
    stained = cv2.dilate(raw, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    g = small[..., 1].copy()
    g[(stained > 0) | ~valid] = _percentile_u8(g[valid], 90)  # paint with the background level
    g = cv2.GaussianBlur(g, (0, 0), 1.0)
    c = cv2.HoughCircles(g, cv2.HOUGH_GRADIENT_ALT, dp=1.5, minDist=WORK_WIDTH / 25, param1=60, param2=0.7,
                         minRadius=WORK_WIDTH // 50, maxRadius=WORK_WIDTH // 6)
    if c is None:
        return np.zeros((0, 3), np.float32), f, small[..., 1]
    return c[0][_stained_share(cv2.integral(raw), c[0]) < 0.03], f, small[..., 1]


def _stained_share(integral: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Share of stained pixels in each circle's bounding square (from the mask's integral image): cheap, and
    enough to tell a white cell's outline."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    box = np.stack([c[:, 0] - c[:, 2], c[:, 1] - c[:, 2], c[:, 0] + c[:, 2], c[:, 1] + c[:, 2]], 1)
    x0, y0, x1, y1 = (np.clip(box[:, k].astype(np.int64), 0, lim) for k, lim in ((0, w), (1, h), (2, w), (3, h)))
    area = np.maximum(1, (x1 - x0) * (y1 - y0))
    return (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]) / area


def _percentile_u8(values: np.ndarray, q: float) -> np.uint8:
    """np.percentile for uint8 values by counting (10x faster; the 'lower' interpolation)."""
    cum = np.cumsum(np.bincount(values.ravel(), minlength=256))
    return np.uint8(np.searchsorted(cum, q / 100 * (cum[-1] - 1), side="right"))


def _outermost(c: np.ndarray) -> np.ndarray:
    """Of circles sharing a centre (pallor ring inside the rim), keep the largest."""
    keep: list[tuple[float, float, float]] = []
    for x, y, r in c[np.argsort(-c[:, 2])]:
        if not any(np.hypot(x - a, y - b) < 0.6 * big for a, b, big in keep):
            keep.append((x, y, r))
    return np.array(keep, np.float32).reshape(-1, 3)


def _edge_radii(g: np.ndarray, circles: np.ndarray, rays: int = 32) -> list[float | None]:
    """Per circle, the radius of the steepest outward rise of its median radial profile (dark cell -> bright
    background); None where under half its rays lie inside the image. All circles at once: their radii padded to
    one length, every point sampled in one remap, the median over the inside rays read from one sort (the rays
    outside set to NaN, which sorts last). The same numbers as one circle at a time, in half the time
    (tests/test_scale.py keeps that loop as the definition)."""
    out: list[float | None] = [None] * len(circles)
    if not len(circles):
        return out
    h, w = g.shape
    th = np.linspace(0, 2 * np.pi, rays, endpoint=False)
    radii, lens = _padded_radii(circles[:, 2])
    valid = np.arange(radii.shape[1]) < lens[:, None]  # circle x radius
    xs = circles[:, 0, None, None] + np.cos(th)[None, :, None] * radii[:, None, :]  # circle x ray x radius (float64)
    ys = circles[:, 1, None, None] + np.sin(th)[None, :, None] * radii[:, None, :]
    inside = (((xs >= 0) & (xs < w - 1) & (ys >= 0) & (ys < h - 1)) | ~valid[:, None, :]).all(2)  # circle x ray
    keep = np.flatnonzero(inside.sum(1) >= rays // 2)
    if not keep.size:
        return out
    shape = (keep.size, rays, radii.shape[1])
    profiles = _sampled(g, xs[keep].astype(np.float32).ravel(), ys[keep].astype(np.float32).ravel()).reshape(shape)
    profiles = np.sort(np.where(inside[keep][:, :, None], profiles, np.float32(np.nan)), axis=1)
    medians = _middle(profiles, inside[keep].sum(1))
    steepest = _gradient(medians, lens[keep]).argmax(1)
    for j, k in enumerate(keep):
        out[k] = float(radii[k, steepest[j]])
    return out


def _padded_radii(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(circle x radius: each circle's sampled radii, 0.6r to 1.6r in half pixels, zero-padded; their counts)."""
    each = [np.arange(max(2.0, 0.6 * x), 1.6 * x, 0.5, dtype=np.float32) for x in r]
    lens = np.array([a.size for a in each])
    out = np.zeros((len(each), int(lens.max())), np.float32)
    for k, a in enumerate(each):
        out[k, : a.size] = a
    return out, lens


def _middle(ordered: np.ndarray, m: np.ndarray) -> np.ndarray:
    """np.median over axis 1 of the first m[k] (sorted) rows of each ordered[k]."""
    i = np.arange(len(m))
    low, high = ordered[i, (m - 1) // 2], ordered[i, m // 2]
    return np.where((m % 2 == 1)[:, None], low, (low + high) / np.float32(2))


def _gradient(f: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """np.gradient of each row's first lens[k] values (at least 2); -inf past them."""
    i = np.arange(len(f))
    out = np.full_like(f, -np.inf)
    out[:, 1:-1] = (f[:, 2:] - f[:, :-2]) / 2.0
    out[:, 0] = f[:, 1] - f[:, 0]
    out[i, lens - 1] = f[i, lens - 1] - f[i, lens - 2]
    out[np.arange(f.shape[1]) >= lens[:, None]] = -np.inf
    return out


REMAP_WIDTH = 4096  # cv2.remap takes maps under 32,767 pixels a side


def _sampled(g: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`g` at the points (xs, ys), bilinear, in one remap: the points laid out in rows of REMAP_WIDTH (twenty big
    circles in a greyscale PBC crop gave 64,000 points, past remap's limit for one row)."""
    n = xs.size
    pad = -n % REMAP_WIDTH
    mx, my = (np.pad(v, (0, pad)).reshape(-1, REMAP_WIDTH) for v in (xs, ys))
    return cv2.remap(g, mx, my, cv2.INTER_LINEAR).ravel()[:n]


def estimate_scale(rgb: np.ndarray) -> Scale:
    """Pixels a micrometre of `rgb` (HxWx3 uint8), from the median red-cell diameter; when the image as it is
    gives none, once more with its background made neutral (under a cyan cast every pixel looked stained, so
    every red cell was painted out)."""
    s = _estimate(rgb)
    if not s.found:
        balanced = neutral_background(rgb)
        if balanced is not rgb:
            s = _estimate(balanced)
    return s


def ruler_image(rgb: np.ndarray, checked: bool = False) -> np.ndarray | None:
    """When `rgb`'s tones lie outside every training lab's, the image its red cells are measured on instead: `rgb`
    through curves onto BCCD's (wbc.image.tone.curves_for_ruler), the lab this ruler was made on; None otherwise."""
    luts = curves_for_ruler(rgb, checked)
    return None if luts is None else mapped(rgb, luts)


def _estimate(rgb: np.ndarray) -> Scale:
    c, f, green = _circles(rgb)
    if len(c) < MIN_RBCS:
        return Scale(None, len(c))
    g = cv2.GaussianBlur(green, (0, 0), 0.7).astype(np.float32)
    radii = [r for r in _edge_radii(g, _outermost(c)) if r]
    if len(radii) < MIN_RBCS:
        return Scale(None, len(radii))
    return Scale(float(2 * np.median(radii) / f / RBC_DIAMETER_UM * RBC_BOX_FACTOR), len(radii))


def plausible(rgb: np.ndarray, s: Scale) -> bool:
    """At this scale the image's stained cell is no wider than `MAX_STAINED_EXTENT_UM` (read on `rgb` as it is: pass
    it with its background made neutral, as the stain rules want it)."""
    return stained_extent_px(rgb) / s.px_per_um <= MAX_STAINED_EXTENT_UM


def source_scale(images, sample: int = 120, plausible_only: bool = False) -> dict:
    """Median and spread of the per-image estimates over (an even sample of) one source's images; `plausible_only`
    leaves out estimates that make the image's cell implausibly wide (a run of tight crops: their fragments gave a
    run's median of 2.6 px/um where the truth was about 7, and every cell of the run was framed at that). Each image
    is measured as the shipped model's `frame` measures it: with its background made neutral, or, in colours unlike
    every training lab's, through curves onto BCCD's (ruler_image). Read as they came, BCCD val fields through three
    of eight other cameras gave their folder 10.0-11.4 px/um for 14 (docs/results.md, session 30)."""
    images = list(images)
    pick = [images[i] for i in np.linspace(0, len(images) - 1, min(sample, len(images))).astype(int)] if images else []
    values = []
    for im in pick:
        try:
            rgb = decode(im)
            balanced, ruler = neutral_background(rgb), ruler_image(rgb)
            s = estimate_scale(balanced if ruler is None else ruler)  # as `frame` reads it
        except Exception:  # a bad file says nothing about the microscope
            continue
        if s.found and (not plausible_only or plausible(balanced, s)):
            values.append(s.px_per_um)
    if not values:
        return {"px_per_um": None, "images": len(pick), "found": 0}
    v = np.array(values)
    return {"px_per_um": float(np.median(v)), "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)),
            "images": len(pick), "found": len(values)}
