"""Whole-field counting: find every cell, classify each WBC with the cell model, report the differential."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from wbc.count.detect import (  # noqa: F401  (MAX_FIELD_PIXELS: re-exported)
    BCCD_PX_PER_UM,
    MAX_FIELD_PIXELS,
    TONE_CONTRAST_LIMIT,
    TONE_GAIN_LIMIT,
    ClassicDetector,
    DetectConfig,
)
from wbc.count.detector import COUNT_MAX_PIXELS, one_per_cell
from wbc.count.differential import alerts, differential
from wbc.count.voc import TYPES, Box
from wbc.errors import ImageTooLarge, WbcError
from wbc.image.decode import decode_shrunk, without_margins
from wbc.image.framing import cell_view, source_image
from wbc.image.scale import estimate_scale
from wbc.image.stain import (
    MIN_NUCLEUS_UM2,
    PALE_CHROMA,
    cell_centre,
    is_greyscale,
    largest_stained_um2,
    neutral_background,
    noise_sigma,
    raised,
    stain_colour,
    stain_readable,
    too_pale,
    washed_out,
)
from wbc.image.tone import BCCD_TONES, curves_towards, mapped
from wbc.infer.predictor import GREYSCALE, MAX_NOISE, MIN_PX_PER_UM, image_reasons

MEASURE_WINDOW = (640, 480)  # at the detector's scale: where a large field's red cells are measured
STRONG_WINDOW = 7  # red cells in the window that settle a field's scale (as wbc.image.framing.STRONG_RBCS for an image)
CELL_BATCH = 32  # white cells classified at once: the network's working memory grows with it (batch 64 at 192 px: 380 MB more at the peak of a 100-Mpx slide)
COLOURS = {"RBC": (220, 60, 60), "WBC": (90, 40, 200), "Platelets": (30, 170, 60)}  # RGB


@dataclass
class FieldCount:
    source: str
    size: tuple[int, int]  # width, height
    boxes: list[Box]  # counted cells, in the image's own pixels
    candidates: list[Box] = field(repr=False, default_factory=list)  # every candidate (for AP)
    wbc: list[dict] = field(default_factory=list)  # per WBC: box, class, probability, probabilities, review
    px_per_um: float = BCCD_PX_PER_UM  # the field's scale, and how it was known: given | measured | assumed
    scale: str = "given"
    tones: str = "as is"  # "mapped": its cells found (and scale measured) through curves onto BCCD's tones (wbc.image.tone)
    warnings: list[str] = field(default_factory=list)  # the field as a whole: cells may be missed, every WBC flagged (field_warnings)

    @property
    def counts(self) -> dict[str, int]:
        return {t: sum(b.kind == t for b in self.boxes) for t in TYPES}

    def to_dict(self) -> dict:
        return {"image": self.source, "width": self.size[0], "height": self.size[1], "px_per_um": round(self.px_per_um, 2),
                "scale": self.scale, "tones": self.tones, "warnings": self.warnings, "counts": self.counts, "wbc": self.wbc,
                "cells": [{"type": b.kind, "box": _rounded(b), "score": round(float(b.score), 3)}
                          for b in self.boxes]}


def _rounded(b: Box) -> list[float]:
    return [round(float(v), 1) for v in (b.x0, b.y0, b.x1, b.y1)]


def _scaled(b: Box, f: float) -> Box:
    nucleus = (b.nucleus[0] / f, b.nucleus[1] / f) if b.nucleus else None
    return Box(b.kind, b.x0 / f, b.y0 / f, b.x1 / f, b.y1 / f, b.score, nucleus)


def field_scale(work: np.ndarray, f: float, curves: np.ndarray | None = None) -> tuple[float, int] | None:
    """(pixels a micrometre of the original field, the red cells it rests on), measured from the red cells of `work`
    (the field scaled by `f`) in a window about one BCCD field wide at the detector's scale (a large scan's red
    cells would be too small to find in its whole width). Where the field is wider than that window and the
    window finds fewer than STRONG_WINDOW red cells, the whole field's estimate is taken when it rests on more (a
    high-magnification camera: at 3-4x BCCD's scale the window holds two or three red cells cut by its edges, and
    came out 0.2-0.99x the truth). None when too few red cells are found. Read through `curves` (wbc.image.tone)
    when given: only what is read is mapped, not a whole slide."""
    h, w = work.shape[:2]
    win_w, win_h = min(w, MEASURE_WINDOW[0]), min(h, MEASURE_WINDOW[1])
    x0, y0 = (w - win_w) // 2, (h - win_h) // 2
    s = estimate_scale(mapped(np.ascontiguousarray(work[y0 : y0 + win_h, x0 : x0 + win_w]), curves))
    if (win_w, win_h) != (w, h) and s.rbcs < STRONG_WINDOW:
        whole = estimate_scale(mapped(work, curves))
        s = whole if whole.found and whole.rbcs > s.rbcs else s
    return (s.px_per_um / f, s.rbcs) if s.found else None


@dataclass
class Field:
    """A field as read for counting: at the detector's scale (`work`), its original size, its pixels a micrometre and
    how known (given | measured | assumed), and the curves onto BCCD's tones its cells are found through (None: as
    it is)."""

    work: np.ndarray
    size: tuple[int, int]
    px_per_um: float
    scale: str
    curves: np.ndarray | None


def load_field(source, px_per_um: float | None, work_scale: float) -> Field:
    """The field, read at BCCD's scale unless given one, measured from its red cells, read again at the measured
    scale when it differs; too few red cells: BCCD's assumed. A field wider than the measuring window and first read
    far from its scale (over 25% off) is measured once more at the scale found, where the window holds about a BCCD
    field's red cells (`scripts/high_magnification.py`). The red cells are measured through the field's curves onto
    BCCD's tones: under a cyan cast with dark blue-grey red cells the scale came out at 8-10 px/um for 12-15."""
    guess = px_per_um or BCCD_PX_PER_UM
    work, (w, h) = _lit(source, work_scale / guess)
    curves = curves_towards(work, BCCD_TONES, TONE_GAIN_LIMIT, TONE_CONTRAST_LIMIT)
    if px_per_um:
        return Field(work, (w, h), px_per_um, "given", curves)
    first = field_scale(work, work.shape[1] / w, curves)
    if first is None:
        return Field(work, (w, h), guess, "assumed", curves)
    measured, wide = first[0], work.shape[1] > MEASURE_WINDOW[0] or work.shape[0] > MEASURE_WINDOW[1]
    if abs(measured / guess - 1) > 0.02:
        work, _ = _lit(source, work_scale / measured)
        again = field_scale(work, work.shape[1] / w, curves) if wide and max(measured / guess, guess / measured) > 1.25 else None
        if again and (again[1] >= STRONG_WINDOW or again[1] >= first[1]) and abs(again[0] / measured - 1) > 0.02:
            measured = again[0]
            work, _ = _lit(source, work_scale / measured)
    return Field(work, (w, h), measured, "measured", curves)


def _lit(source, factor: float) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_shrunk`, with a dim field raised before anything reads it (`wbc.image.stain.raised`): at a quarter of
    their light BCCD val fields had 49% of their white cells classified right, raised 92%, as in full light (docs/results.md, session 19)."""
    work, size = decode_shrunk(source, factor, COUNT_MAX_PIXELS)
    return raised(work), size


def count_field(predictor, source, px_per_um: float | None = None, cfg: DetectConfig | None = None, name: str | None = None,
                detector=None) -> FieldCount:
    """Find RBCs, WBCs and platelets in one field of any size; classify every WBC, framed as the cell model was trained.

    `px_per_um`: the field's pixels a micrometre; None measures it from the field's red cells (BCCD's 14
    assumed when too few are found; `FieldCount.scale` says which). `detector`: a wbc.count.detector.Detector
    (the learned one; fields are tiled, so any size works), or a ClassicDetector (None, or "classic": colour
    and circle detection, one field up to 16 Mpx, `cfg` its settings)."""
    if px_per_um is not None and px_per_um <= 0:
        raise WbcError(f"--px-per-um must be positive, not {px_per_um}")
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>")
    if detector is None or detector == "classic":
        detector = ClassicDetector(cfg)
    work_scale = detector.px_per_um
    fl = load_field(source, px_per_um, work_scale)
    work, (w, h), px_per_um, how = fl.work, fl.size, fl.px_per_um, fl.scale
    if w * h > detector.max_pixels:
        raise ImageTooLarge(f"{name} is {w}x{h} pixels: the classic detector takes one microscope field (up to {detector.max_pixels / 1e6:.0f} Mpx); "
                            f"use the learned detector (the default), which tiles any size")
    f = work.shape[1] / w  # the exact factor of the rounded size
    warnings, flags = field_warnings(work, px_per_um, how)
    candidates = detector.boxes(mapped(work, fl.curves))  # the classifier reads the field as it is, and judges its colours
    calls = detector.counted(candidates)
    keep = one_per_cell(calls)  # a white cell the detector raised twice is counted once
    wbcs = [b for b in keep if b.kind == "WBC"]
    crowd = crowded(sum(b.kind == "WBC" for b in calls), sum(b.kind == "RBC" for b in keep), len(wbcs))
    warnings, flags = warnings + crowd[:1], flags + crowd[1:]
    result = FieldCount(name, (w, h), [_scaled(b, f) for b in keep], [_scaled(b, f) for b in candidates], px_per_um=px_per_um, scale=how,
                        tones="as is" if fl.curves is None else "mapped", warnings=warnings)
    spec = predictor.spec
    owned = work.flags.writeable and not (isinstance(source, np.ndarray) and np.shares_memory(work, source))
    cells = source_image(work, spec, in_place=owned) if wbcs else work  # the detector is done with it: no second 300 MB copy of a slide
    readable = stain_readable(cells) if wbcs else cells  # where each box's nucleus is found (a cyan cast: balanced)
    for i in range(0, len(wbcs), CELL_BATCH):  # in batches: a slide can hold thousands
        chunk = wbcs[i : i + CELL_BATCH]
        x = torch.stack([cell_view(cells, spec, work_scale, b.nucleus or nucleus_in(readable, b)) for b in chunk])
        probs, dist = predictor.scores(x)
        for k, (b, p) in enumerate(zip(chunk, probs)):
            d = predictor.to_prediction(p, name, distance=None if dist is None else dist[k], px_per_um=px_per_um, view=x[k]).to_dict()
            own = flags + ([] if GREYSCALE in flags else speck_reasons(readable, b, work_scale))
            if own:
                d["review"], d["review_reason"] = True, "; ".join(filter(None, [d["review_reason"], *own]))
            for k in ("source", "white_cell", "note", "scale"):
                d.pop(k)
            d["px_per_um"] = px_per_um
            result.wbc.append({"box": _rounded(_scaled(b, f)), **d})
    return result


def field_warnings(work: np.ndarray, px_per_um: float, how: str = "measured") -> tuple[list[str], list[str]]:
    """(what to say of the field as a whole, the reasons every WBC found in it is flagged for), read on the field at
    the detector's scale (about the classifier's): an overexposed, coarse or greyscale field loses white cells, not
    only their class (BCCD val fields at 1.8x exposure: WBC recall 0.89; at 2.8 px/um: 0.91; in grey 0.90, and the
    WBCs found 73% right), and grain hides what tells them apart; a field whose scale had to be assumed (`how`) may
    be seen at the wrong size (scripts/shifted_fields.py). The noise is read where the classifier's views are cut:
    at the learned detector's 7 px/um, about the classifier's 8 (a field enlarged to the classic detector's 14 reads
    smoother)."""
    picture = without_margins(work)  # a white border is no smear background
    clipped, noise, grey = washed_out(picture), noise_sigma(picture), is_greyscale(picture)
    step = max(1, picture.shape[1] // 1000)  # the stain's colour is a share: a slide is read at about 1000 px wide
    colour = None if grey else stain_colour(neutral_background(np.ascontiguousarray(picture[::step, ::step])))
    flags = image_reasons(noise, clipped, grey, stain_colour=colour)
    said = []
    if how == "assumed":
        flags.insert(0, f"scale not measured (no usable red cells): {BCCD_PX_PER_UM:.0f} px/um assumed")
        said.append(f"scale not measured (too few red cells found): BCCD's {BCCD_PX_PER_UM:.0f} px/um assumed, so cells may be "
                    f"missed or sized wrong and those found are flagged; give the scale (--px-per-um)")
    if clipped:
        said.append("overexposed: the background is clipped white and the stain washed out, so white cells may be missed "
                    "and those found are flagged; set the camera so the background is not clipped")
    if px_per_um < MIN_PX_PER_UM:
        said.append(f"low resolution ({px_per_um:.1f} px/um < {MIN_PX_PER_UM:.0f}): white cells may be missed and those found are "
                    f"flagged; use a 40x-100x objective")
    if grey:
        said.append("greyscale: the stain's colours cannot be seen, so white cells may be missed and those found are flagged; "
                    "save the camera's colour images")
    if too_pale(colour, clipped):
        said.append(f"pale stain (colour {colour:.2f} < {PALE_CHROMA:.2f}): white cells may be misread, and those found are flagged; "
                    "check the staining and set the camera's contrast and saturation to neutral")
    if noise >= MAX_NOISE:
        said.append(f"noisy image (noise {noise:.1f} grey levels): every white cell found is flagged")
    return said, flags


CROWDED_WBC = 5  # white cells in one field from which more white than red cells is not believed: BCCD fields hold 0-2 (and 0-3
# under colour and scale shifts) among about ten red cells; under a cyan background whose red cells turn blue-grey the
# detector called 13-23 cells white where it found 0-5 red, and the classifier let some through unflagged


def crowded(wbcs: int, rbcs: int, shown: int | None = None) -> list[str]:
    """[what to say of the field, the reason each of its white cells is flagged] when the detector calls more white cells
    than red ones, at least CROWDED_WBC (a leukaemic smear may, and it is looked at anyway); [] otherwise. `wbcs`: its
    calls, a cell raised twice included (what the rule was chosen on); `shown`: the white cells counted, for the words."""
    if wbcs < CROWDED_WBC or wbcs <= rbcs:
        return []
    n = wbcs if shown is None else shown
    return [f"{n} white cells and {rbcs} red cells in one field: red cells may be taken for white cells (another stain or "
            f"colour), so every white cell is flagged; check the field",
            f"field of more white than red cells ({n} > {rbcs}): red cells may be taken for white cells"]


def speck_reasons(readable: np.ndarray, b: Box, px_per_um: float) -> list[str]:
    """A box called a white cell that holds no nucleus-sized stain: a platelet on a red cell, or debris (BCCD val fields,
    the detector's boxes: every real white cell's largest stained region >= 27 um2 as they are and under six colour and
    scale shifts; the phantom white cells the flags let through under a cyan cast and at 0.6x 0.0-0.3 um2; `predict`
    answers such an image "no white cell"). Flagged, not dropped: a real cell is never lost in silence."""
    x0, y0, x1, y1 = (max(0, int(round(v))) for v in (b.x0, b.y0, b.x1, b.y1))
    crop = readable[y0:y1, x0:x1]
    area = largest_stained_um2(np.ascontiguousarray(crop), px_per_um) if crop.size else 0.0
    if area >= MIN_NUCLEUS_UM2:
        return []
    return [f"no nucleus-sized stain in its box ({area:.1f} um2 < {MIN_NUCLEUS_UM2:.0f}): a platelet or debris may have been taken for a white cell"]


def nucleus_in(rgb: np.ndarray, b: Box) -> tuple[float, float]:
    """The stained centre inside a detected box (where the classifier's view is centred), the box centre if none."""
    x0, y0, x1, y1 = (int(round(v)) for v in (b.x0, b.y0, b.x1, b.y1))
    crop = rgb[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
    if crop.size == 0:
        return b.centre
    cx, cy = cell_centre(crop)
    return x0 + cx, y0 + cy


def field_summary(counts: list[dict[str, int]], labels: list[str], classes: list[str]) -> dict:
    """Totals over fields (each a {type: n}), the WBC differential of their `labels` and its alert lines:
    one summary for the CLI and the API."""
    return {"totals": {k: sum(c[k] for c in counts) for k in TYPES}, "differential": differential(labels, classes), "alerts": alerts(labels)}


def draw(rgb: np.ndarray, fc: FieldCount) -> np.ndarray:
    """The field with every counted cell boxed (colour by type) and each WBC labelled with class and probability."""
    im = rgb.copy()
    thick = max(1, round(min(im.shape[:2]) / 240))
    for b in fc.boxes:
        if b.kind != "WBC":
            cv2.rectangle(im, (int(b.x0), int(b.y0)), (int(b.x1), int(b.y1)), COLOURS.get(b.kind, (0, 0, 0)), thick)
    for wd in fc.wbc:
        x0, y0, x1, y1 = (int(v) for v in wd["box"])
        cv2.rectangle(im, (x0, y0), (x1, y1), COLOURS["WBC"], thick * 2)
        text = f"{wd['class']} {wd['probability']:.2f}" + (" ?" if wd["review"] else "")
        scale = 0.45 * thick
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 4 if y0 - th - 6 > 0 else y1 + th + 4
        cv2.rectangle(im, (x0, ty - th - 3), (x0 + tw + 4, ty + base), COLOURS["WBC"], -1)
        cv2.putText(im, text, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return im


def save_annotated(rgb: np.ndarray, fc: FieldCount, out_dir: Path) -> Path:
    """`<out_dir>/<image stem>_count.png`, written atomically."""
    from wbc._util.io import atomic_write_bytes
    from wbc.infer.explain import png_bytes

    path = Path(out_dir) / f"{Path(fc.source).stem or 'field'}_count.png"
    atomic_write_bytes(path, png_bytes(draw(rgb, fc)))
    return path
