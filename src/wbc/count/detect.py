"""Find every cell in a smear field by colour and shape (no trained detector).

At the magnification of BCCD (about 14 pixels a micrometre, 640x480 fields):
- WBC: nucleus stained purple: blue well above red (wbc.image.stain.stain_mask), closed so
  the lobes of a neutrophil join, components larger than a platelet. The box is the nucleus
  box grown by a cytoplasm margin.
- Platelets: small stained components away from WBCs.
- RBC: circles of the RBC size range by the Hough gradient method on the green channel
  (tried first: distance-transform peaks of a cell mask reached AP 0.20 on BCCD val, Hough 0.60
  on a quarter of BCCD train).
Every length is in micrometres and converted with `px_per_um`, so another magnification is a flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wbc.count.voc import Box
from wbc.image.stain import stain_mask

BCCD_PX_PER_UM = 14.0  # median BCCD RBC box 105 px / 7.5 um typical RBC diameter
# The detectors were made for BCCD's tones (wbc.image.tone.BCCD_TONES). A field further from them than BCCD's own train
# fields lie (gain at most 0.095, contrast 0.108) is mapped onto them before its cells are found and its scale measured.
TONE_GAIN_LIMIT = 0.12
TONE_CONTRAST_LIMIT = 0.15


@dataclass
class DetectConfig:
    px_per_um: float = BCCD_PX_PER_UM
    stain_threshold: int = 30  # lower than the classifier's framing (40): platelets stain paler (AP 0.66 vs 0.49 on BCCD train)
    wbc_min_area_um2: float = 12.0  # stained area of a WBC nucleus (platelets are ~2-8 um2)
    platelet_min_area_um2: float = 0.4
    wbc_margin_um: float = 1.6  # cytoplasm beyond the nucleus box
    wbc_min_side_um: float = 9.5
    rbc_min_radius_um: float = 2.6
    rbc_max_radius_um: float = 4.6
    rbc_min_distance_um: float = 3.9
    rbc_votes_loose: int = 22  # Hough accumulator threshold for a candidate (ranked by AP)
    rbc_votes_strict: int = 30  # ... for a counted RBC
    rbc_box_scale: float = 1.08  # Hough finds the inner rim; VOC boxes hold the whole cell
    rbc_scale: float = 0.5  # RBCs are large: find circles at half resolution (4x less work)
    count_score: float = 0.9  # detections scored at least this are counted


def _px(um: float, cfg: DetectConfig) -> float:
    return um * cfg.px_per_um


def find_stained(rgb: np.ndarray, cfg: DetectConfig) -> tuple[list[Box], list[Box], np.ndarray]:
    """(WBC boxes, platelet boxes, WBC mask) from the stain mask."""
    h, w = rgb.shape[:2]
    mask = stain_mask(rgb, cfg.stain_threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    k = max(3, int(_px(0.9, cfg)) | 1)
    closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, lab, stats, cents = cv2.connectedComponentsWithStats(closed, connectivity=8)
    um2 = cfg.px_per_um ** 2
    wbcs, platelets = [], []
    wbc_mask = np.zeros((h, w), np.uint8)
    margin, min_side = _px(cfg.wbc_margin_um, cfg), _px(cfg.wbc_min_side_um, cfg)
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area >= cfg.wbc_min_area_um2 * um2:
            cx, cy = x + bw / 2, y + bh / 2
            half_w, half_h = max(bw / 2 + margin, min_side / 2), max(bh / 2 + margin, min_side / 2)
            b = Box("WBC", max(0, cx - half_w), max(0, cy - half_h), min(w, cx + half_w), min(h, cy + half_h), score=min(1.0, area / (60 * um2)),
                    nucleus=(float(cents[i][0]), float(cents[i][1])))
            wbcs.append(b)
            cv2.rectangle(wbc_mask, (int(b.x0), int(b.y0)), (int(b.x1), int(b.y1)), 1, -1)
        elif area >= cfg.platelet_min_area_um2 * um2:
            pad = _px(0.6, cfg)
            platelets.append(Box("Platelets", max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad),
                                 score=min(1.0, area / (6 * um2))))
    platelets = [p for p in platelets if not wbc_mask[int(p.centre[1]), int(p.centre[0])]]
    return wbcs, platelets, wbc_mask


def _hough(gray: np.ndarray, votes: int, cfg: DetectConfig, f: float) -> np.ndarray:
    """Circles found on `gray` (already downscaled by f), in full-resolution pixels."""
    c = cv2.HoughCircles(gray, cv2.HOUGH_GRADIENT, dp=1.5, minDist=_px(cfg.rbc_min_distance_um, cfg) * f, param1=30, param2=votes,
                         minRadius=int(_px(cfg.rbc_min_radius_um, cfg) * f), maxRadius=int(_px(cfg.rbc_max_radius_um, cfg) * f))
    return np.zeros((0, 3), np.float32) if c is None else c[0] / f


def find_rbcs(rgb: np.ndarray, wbc_mask: np.ndarray, cfg: DetectConfig) -> list[Box]:
    """Circles on the green channel (where RBC rims contrast most), by the Hough gradient method.

    Circles with fewer accumulator votes are kept for ranking (AP) with a lower score; only the
    circles that also pass the stricter vote count are counted (see `counted`)."""
    h, w = rgb.shape[:2]
    f = cfg.rbc_scale
    g = rgb[..., 1] if f == 1 else cv2.resize(rgb[..., 1], (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    gray = cv2.GaussianBlur(g, (0, 0), max(0.5, _px(0.15, cfg) * f))
    loose, strict = _hough(gray, cfg.rbc_votes_loose, cfg, f), _hough(gray, cfg.rbc_votes_strict, cfg, f)
    near = _px(0.7, cfg)
    out = []
    for rank, (x, y, r) in enumerate(loose):
        if wbc_mask[min(h - 1, int(y)), min(w - 1, int(x))]:
            continue  # the WBC's own outline
        strong = len(strict) and np.min(np.hypot(strict[:, 0] - x, strict[:, 1] - y)) < near
        r *= cfg.rbc_box_scale
        out.append(Box("RBC", max(0, x - r), max(0, y - r), min(w, x + r), min(h, y + r), score=(1.0 if strong else 0.5) - rank * 1e-4))
    return out


def detect(rgb: np.ndarray, cfg: DetectConfig | None = None) -> list[Box]:
    """Every candidate cell box (RBC candidates included); `counted` picks the ones to count."""
    cfg = cfg or DetectConfig()
    wbcs, platelets, wbc_mask = find_stained(rgb, cfg)
    return wbcs + platelets + find_rbcs(rgb, wbc_mask, cfg)


def counted(boxes: list[Box], cfg: DetectConfig | None = None) -> list[Box]:
    cfg = cfg or DetectConfig()
    return [b for b in boxes if b.kind != "RBC" or b.score >= cfg.count_score]


MAX_FIELD_PIXELS = 16_000_000  # the classic detector: one microscope field


class ClassicDetector:
    """Colour and circle detection behind the learned Detector's interface (boxes, counted, name), so
    count_field and the server take either. One microscope field at a time (no tiling)."""

    name = "classic"
    engine = None  # no network
    max_pixels = MAX_FIELD_PIXELS

    def __init__(self, cfg: DetectConfig | None = None):
        self.cfg = cfg or DetectConfig()

    @property
    def px_per_um(self) -> float:
        """The scale it works at (a field is brought to it first)."""
        return BCCD_PX_PER_UM

    def boxes(self, rgb: np.ndarray) -> list[Box]:
        return detect(rgb, self.cfg)

    def counted(self, boxes: list[Box]) -> list[Box]:
        return counted(boxes, self.cfg)
