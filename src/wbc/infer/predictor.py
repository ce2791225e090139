"""One entry point for inference: a Predictor owns the model *and* its preprocessing."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wbc._util.device import pick_device
from wbc._util.io import sha256
from wbc.errors import WbcError
from wbc.image.framing import SMEAR_SCALES, Framed, frame_source
from wbc.image.stain import (
    MIN_NUCLEUS_UM2,
    MIN_STAINED_UM2,
    PALE_CHROMA,
    reinhard,
    too_pale,
    view_colours,
)
from wbc.infer.answers import NO_WHITE_CELL, UNIDENTIFIED
from wbc.infer.engines import OnnxEngine, TorchEngine
from wbc.models.colours import ColourCheck
from wbc.models.files import SHIPPED_MODEL, asset_path
from wbc.models.io import export_path, load_model_file, read_metadata

log = logging.getLogger(__name__)


def shipped_model_path() -> Path:
    return asset_path(SHIPPED_MODEL)


NON_NUCLEATED = ("PLATELET",)  # classes whose cells have no nucleus: a small stained region is right for them


@dataclass
class Prediction:
    source: str
    label: str  # a class, or NO_WHITE_CELL
    probability: float
    probabilities: dict[str, float]
    review: bool
    px_per_um: float | None = None
    scale: str | None = None  # given | measured | cell | assumed
    note: str | None = None  # why there is no class ("no white cell found: ...")
    review_reason: str | None = None  # why `review` is set ("low confidence ...; scale not measured ...")
    distance: float | None = None  # to the nearest known type's training cells (about 1: typical); None: not measured
    colour_distance: float | None = None  # of the view's colours to the nearest training source's (about 1: typical); None: not measured
    cells_seen: int | None = None  # stained cells in the image; the answer is the one nearest its middle's (None: not
    # counted, or no white cell found)

    @property
    def several(self) -> bool:
        """More than one white cell in the image: this answer is for one of them."""
        return (self.cells_seen or 0) > 1

    def to_dict(self) -> dict:
        return {"source": self.source, "class": self.label, "probability": self.probability,
                "probabilities": self.probabilities, "review": self.review, "review_reason": self.review_reason,
                "white_cell": self.label != NO_WHITE_CELL, "px_per_um": self.px_per_um, "scale": self.scale, "note": self.note,
                "distance": self.distance, "colour_distance": self.colour_distance, "cells_seen": self.cells_seen}


def beyond(distance: float | None, limit: float) -> bool:
    """The distance was measured and passes `limit` (0: that limit is not set): the one test behind the flag,
    UNIDENTIFIED and the run-level check."""
    return distance is not None and bool(limit) and distance > limit


MAX_NOISE = 3.5  # camera noise (grey levels) from about which the answers the flags let through fall under 97% right (validation
# cells with Gaussian noise added: Kaggle 98.0 / 97.0 / 96.9 / 94.3 / 78% at sigma 2 / 3 / 4 / 6 / 8; the sources' own
# images read at most 1.6; scripts/noise.py)
MIN_PX_PER_UM = 3.0  # under this the answers the flags let through fall below 97% right (validation cells made coarser:
# PBC 97.8% unflagged right at 3 px/um, 95.6% at 2.5; Kaggle 97.7% at 3, 93.6% at 2; scripts/low_resolution.py)


MIN_JPEG_QUALITY = 40  # validation cells re-saved as JPEG: the answers the flags let through, Kaggle 97.8% right at quality 50,
# 96.9% at 30, 86.7% at 10 (PBC 98.0-98.8%; scripts/blur_jpeg.py). The sources' own files: quality 75-95

CLIPPED = "overexposed (the background is clipped white): pale cytoplasm and granules may be washed out"
# validation cells brightened 1.4x were answered 95.1% (Kaggle) and 94.7% (PBC) right where no other flag fired (scripts/exposure.py)


PALE_EXEMPT = ("PLATELET",)  # answers whose stain is lilac, not blue: no measure of the stain's strength (PBC's own platelets
# read 0.19-0.27, 32 of the 34 PBC train and validation images under PALE_CHROMA)

PURPLE_ONLY = "nucleus read only as purple, not blue over red: a stain or light unlike the training labs'"

GREYSCALE = "greyscale image: the stain's colours (a granule's orange or violet) cannot be seen"
# validation cells made grey: Kaggle 49.6% right, the 2.9% no other flag caught 85.7% right (scripts/greyscale.py)


def review_reasons(probability: float, spec, framed: Framed | None, distance: float | None = None, px_per_um: float | None = None,
                   label: str | None = None) -> list[str]:
    """Why a technologist should look at this cell: unlike every known type, the model unsure of it (or answering a
    class whose sure answers validation could not vouch for, `ModelSpec.always_review`), its nucleus read
    only as purple (another lab's stain or light), the view around it sized without red cells to measure (a cell seen
    at the wrong size is classified on the wrong evidence), the image too coarse to show a nucleus's lobes and a
    granule (`px_per_um`: a smear field's scale, for a cell cut from it), too grainy (a camera at high gain),
    overexposed, or without colour."""
    reasons = []
    if beyond(distance, spec.far_distance):
        reasons.append(f"far from every known cell type (distance {distance:.2f} > {spec.far_distance:.2f})")
    elif beyond(distance, spec.near_distance):
        reasons.append(f"unlike the training cells (distance {distance:.2f} > {spec.near_distance:.2f})")
    if probability < spec.review_threshold:
        reasons.append(f"low confidence ({probability:.3f} < {spec.review_threshold:.3f})")  # 3 places: 0.94 < 0.94 read as a bug
    elif label in spec.always_review:
        right, answers = spec.always_review[label]
        reasons.append(f"{label.lower()} answers always reviewed: this model's surest on validation were {right} of {answers} right")
    if framed is not None and framed.purple_only:
        reasons.append(PURPLE_ONLY)
    if framed is not None and framed.scale in ("run", "cell", "assumed"):
        source = {"run": "the run's median", "cell": "from the stained cell", "assumed": "assumed from the image width"}[framed.scale]
        reasons.append(f"scale not measured (no usable red cells): {source}")
    px = framed.px_per_um if framed is not None and framed.scale != "assumed" else px_per_um
    if px is not None and px < MIN_PX_PER_UM:
        reasons.append(f"low resolution ({px:.1f} px/um < {MIN_PX_PER_UM:.0f}: too coarse for nuclear and granule detail)")
    colour = None if framed is None or label in PALE_EXEMPT else framed.stain_colour
    return reasons + (image_reasons(framed.noise, framed.overexposed, framed.greyscale, framed.jpeg_quality, colour) if framed is not None else [])


def image_reasons(noise: float, overexposed: bool, greyscale: bool, jpeg_quality: int | None = None,
                  stain_colour: float | None = None) -> list[str]:
    """The image's own faults, whatever cell it shows: grain (a camera at high gain), a background clipped white, no
    colour at all, a file saved at low JPEG quality, a stain too pale (or washed out by the camera) to read."""
    return ([f"noisy image (noise {noise:.1f} grey levels >= {MAX_NOISE:.1f}: grain hides chromatin and granules)"] if noise >= MAX_NOISE else []) + \
        ([CLIPPED] if overexposed else []) + ([GREYSCALE] if greyscale else []) + \
        ([f"heavily compressed JPEG (quality {jpeg_quality} < {MIN_JPEG_QUALITY}): block artefacts hide chromatin and granules"]
         if jpeg_quality is not None and jpeg_quality < MIN_JPEG_QUALITY else []) + \
        ([f"pale stain (colour {stain_colour:.2f} < {PALE_CHROMA:.2f}): a faint nucleus and granules are read as another type's"]
         if too_pale(stain_colour, overexposed) else [])


ALERTS = {"BLAST": 0.05}  # cell types a differential exists to catch: named whenever this probable, whatever the top class
# (chosen on the first three-source model's validation: non-blast PBC and Munich cells had P(BLAST) <= 0.023 in 99 of
# 100; 3 of its 4 missed blasts had 0.097-0.349. On the white-balanced model's validation it names 55 of 2,672 cells,
# every one already flagged by confidence or distance; scripts/selective.py's caches)


CONFIRM = "to be confirmed by a technologist before it is reported"


def alert_reasons(probabilities: dict[str, float], label: str) -> list[str]:
    """"possible blast (P 0.19)" for a cell answered as another type, and "blast: ..." for one answered BLAST, however
    sure: the technologist must look at either. An abnormal type is the one answer a differential may not give unseen:
    a lab's lymphocytes under a stronger stain (saturation 1.8) were called BLAST at 0.95 and above, and a lab's own
    rule (CellaVision's too) has every blast verified."""
    return ([f"{label.lower()}: an abnormal cell type, {CONFIRM}"] if label in ALERTS else []) + \
        [f"possible {c.lower()} (P {probabilities[c]:.2f})" for c, p in ALERTS.items()
         if c in probabilities and c != label and probabilities[c] >= p]


ALWAYS_REVIEWED = 1.001  # an always-reviewed class's answers rank just past the operating point, among the flagged


def strangeness(probability: float, distance: float | None, spec, label: str | None = None) -> float:
    """One number for "how much this answer needs a human": 1 at the review operating point (confidence at
    `review_threshold` or distance at `near_distance`), above it flagged (an always-reviewed class's answer just
    above). Ranks cells for risk-coverage curves."""
    s = spec.review_threshold / max(probability, 1e-9)
    if label in spec.always_review:
        s = max(s, ALWAYS_REVIEWED)
    if distance is not None and spec.near_distance:
        s = max(s, distance / spec.near_distance)
    return s


def unlike_known(distance: float | None, label: str, spec) -> bool | None:
    """The cell lies beyond the near distance (None: the model measures no distance, or there is no cell)."""
    if distance is None or not spec.near_distance or label == NO_WHITE_CELL:
        return None
    return beyond(distance, spec.near_distance)


@dataclass
class LabCheck:
    """A run's cells as a whole: one warning, and every answer flagged for review, when they lie far from every
    training source (a folder out of the model's world) or when enough of them are blasts (a smear with blasts
    needs every cell looked at: the blasts the model misses hide among the cells it calls normal)."""

    cells: int = 0  # cells with a distance
    unlike: int = 0  # of those, beyond the near distance (UNIDENTIFIED included)
    expected: float = 0.05  # the share beyond it on the model's own validation cells
    classified: int = 0  # cells with an answer other than "no white cell"
    blasts: int = 0  # of those, answered BLAST
    fired: bool = False  # judged out of the model's world (`judge`): it stays so
    blast_fired: bool = False  # judged a run with blasts: it stays so
    scope: str = "of the run"  # how the reasons name the cells judged
    subject: str = "these images"  # ... and the warning
    judges_blasts: bool = True  # False: only how far the cells lie (`RecentCells`: blasts belong to one sample, not a lab)
    coloured: int = 0  # classified cells with a colour distance (wbc.models.colours)
    off_colour: int = 0  # of those, beyond the training views' colour limit
    colour_expected: float = 0.005  # the share beyond it on the model's own validation views
    colour_fired: bool = False  # judged in colours unlike every training source's: it stays so

    def add(self, distance: float | None, label: str, spec, colour: float | None = None) -> None:
        if label != NO_WHITE_CELL:
            self.classified += 1
            self.blasts += int(label == "BLAST")
            if colour is not None and spec.colours:
                self.coloured += 1
                self.off_colour += int(colour > spec.colours["limit"])
        u = unlike_known(distance, label, spec)
        if u is not None:
            self.cells += 1
            self.unlike += int(u)

    @property
    def share(self) -> float | None:
        return self.unlike / self.cells if self.cells else None

    def passes(self) -> bool:
        """At least LAB_MIN_CELLS cells were measured and the share unlike the training cells passes LAB_WARN_SHARE
        (and three times what validation shows)."""
        return self.cells >= LAB_MIN_CELLS and self.share > max(LAB_WARN_SHARE, 3 * self.expected)

    @property
    def colour_share(self) -> float | None:
        return self.off_colour / self.coloured if self.coloured else None

    def colours_pass(self) -> bool:
        """At least LAB_MIN_CELLS cells' colours were measured and the share unlike every training source's passes
        COLOUR_WARN_SHARE (and three times what validation shows)."""
        return self.coloured >= LAB_MIN_CELLS and self.colour_share > max(COLOUR_WARN_SHARE, 3 * self.colour_expected)

    def holds_blasts(self) -> bool:
        """Of LAB_MIN_CELLS cells or more, at least BLAST_RUN_MIN and a BLAST_RUN_SHARE were answered BLAST."""
        return self.classified >= LAB_MIN_CELLS and self.blasts >= BLAST_RUN_MIN and self.blasts >= BLAST_RUN_SHARE * self.classified

    def judge(self) -> bool:
        """Is every answer of the run to be flagged, for any of its reasons, now or at any point before (a stream flags
        from there on)?"""
        self.fired = self.fired or self.passes()
        self.colour_fired = self.colour_fired or self.colours_pass()
        self.blast_fired = self.blast_fired or (self.judges_blasts and self.holds_blasts())
        return self.fired or self.colour_fired or self.blast_fired

    def reasons(self) -> dict[str, str]:
        """{the reason's fixed part (LAB_REASON, COLOUR_REASON, BLAST_RUN_REASON): the reason with its counts} for each way the run is
        judged: what a row written before a later judgment lacks (wbc.infer.batch.mend_rows)."""
        self.judge()
        out = {}
        if self.fired:
            out[LAB_REASON] = f"{LAB_REASON} ({self.share:.0%} of {self.cells} cells {self.scope} unlike every training source)"
        if self.colour_fired:
            out[COLOUR_REASON] = (f"{COLOUR_REASON} ({self.colour_share:.0%} of {self.coloured} cells {self.scope} in colours unlike "
                                  f"every training source's)")
        if self.blast_fired:
            out[BLAST_RUN_REASON] = f"{BLAST_RUN_REASON} ({self.blasts} of {self.classified} cells {self.scope} answered BLAST)"
        return out

    def reason(self) -> str:
        """The review reason every answer of such a run carries (`flag_run`)."""
        return "; ".join(self.reasons().values())

    def warning(self) -> str | None:
        """Said once for the run when it is judged (`judge`). A run far from the training cells is told that alone: its
        colours would tell the same user the same thing to do."""
        if not self.judge():
            return None
        far = (f"{self.subject} lie far from the cells the model was trained on: {self.share:.0%} of {self.cells} cells are unlike "
               f"every training source ({self.expected:.0%} on its own validation cells), so its answers here are unreliable "
               f"and flagged for review; {ADAPT}") if self.fired else None
        colours = (f"{self.subject} are stained and lit unlike every lab the model was trained on: {self.colour_share:.0%} of "
                   f"{self.coloured} cells lie outside the training sources' colours ({self.colour_expected:.1%} of its own validation "
                   f"cells), where its answers are wrong more often than it shows, so every answer is flagged for review; {ADAPT}"
                   ) if self.colour_fired and not self.fired else None
        blasts = (f"blasts in this run: {self.blasts} of {self.classified} cells ({self.blasts / self.classified:.1%}) were answered "
                  f"BLAST, so every cell of the run is flagged for review (blasts the model misses pass as other types)") if self.blast_fired else None
        return "; ".join(filter(None, [far, colours, blasts]))


LAB_MIN_CELLS = 20
LAB_WARN_SHARE = 0.35
LAB_REASON = "lab unlike the training sources"
COLOUR_WARN_SHARE = 0.35  # validation folders under 21 shifts (scripts/tone_curves.py --all, docs/results.md session 23): the
# folders read 0-33% (PBC under a cyan cast, dim light, lab 1) or 37% and more; home folders 0-8%, the test splits 2.3-3.5%
COLOUR_REASON = "stain and light unlike the training labs"
ADAPT = "adapt it to this microscope: wbc adapt IMAGES --labelled DIR (ten labelled cells a class) --out lab.safetensors"
BLAST_RUN_MIN = 5  # cells answered BLAST, and at least this share of a run's cells, before the whole run is flagged:
BLAST_RUN_SHARE = 0.05  # validation runs of normal cells give 0-2.9% (Kaggle 4-7 of 240 under five colour shifts, PBC 0-2 of
# 480; scripts/run_flags.py), the test splits 0 of 2,487 (Kaggle) and 3 of 799 (PBC). AML is 20% blasts or more.
BLAST_RUN_REASON = "blasts in this run"


def flag_run(answers: list, lab: LabCheck) -> list:
    """`answers` (Predictions or result dicts) with every cell flagged for review when their run is judged as a whole
    (`LabCheck.judge`): far from every training source, where the answers the cell-level flag let through were
    mostly wrong (held-out sources: 29-43% right, docs/results.md), or holding blasts, where a blast the model
    calls a monocyte is the one error that matters. The run's warning says why once; each answer's reason says it
    too, for the rows read one by one. An answer already carrying a run reason does not get it twice."""
    if not lab.judge():
        return answers
    reasons = lab.reasons()
    for a in answers:
        if isinstance(a, dict):
            if taken := run_reasons_of(a.get("class"), a.get("scale"), reasons, bool(a.get("review"))):
                a["review"], a["review_reason"] = True, with_reasons(a.get("review_reason"), taken)
        elif taken := run_reasons_of(a.label, a.scale, reasons, a.review):
            a.review, a.review_reason = True, with_reasons(a.review_reason, taken)
    return answers


def run_reasons_of(label: str | None, scale: str | None, reasons: dict[str, str], flagged: bool = False) -> dict[str, str]:
    """The reasons of a judged run (`LabCheck.reasons`) an answer takes: all of them for a classified cell; for "no white
    cell" on a smear (red cells measured in it) not yet `flagged` (overexposed, too dark: already "a real cell may be
    missed") the colours' alone, since the stain rule that found nothing reads a nucleus as the training labs' stains show
    one (validation cells saved with red and blue swapped, a common export slip: 6 of 480 Kaggle and PBC cells dropped
    without a word; docs/results.md, session 25); none for a file that failed or an image without red cells (blank, text)."""
    if label in (None, ""):
        return {}
    if label != NO_WHITE_CELL:
        return reasons
    if scale in SMEAR_SCALES and COLOUR_REASON in reasons and not flagged:
        return {COLOUR_REASON: f"{reasons[COLOUR_REASON]}: a real cell may be missed here"}
    return {}


def with_reasons(own: str | None, reasons: dict[str, str]) -> str:
    """`own` review reason with each of a run's `reasons` ({fixed part: text}, `LabCheck.reasons`) it lacks added."""
    return "; ".join(filter(None, [own, *(text for key, text in reasons.items() if key not in (own or ""))]))


def colour_expected(spec) -> float:
    """The share of the model's own validation views beyond its colour limit (LabCheck's default when it has none)."""
    return float(spec.colours.get("val_share", LabCheck.colour_expected))


def lab_check(predictor, answers=()) -> LabCheck:
    """A LabCheck that knows what the model's own validation cells show, holding `answers` (result dicts or
    Predictions)."""
    val = predictor.meta.get("info", {}).get("metrics", {}).get("val", {}).get("openset", {})
    lab = LabCheck(expected=float(val.get("val_near", 0.05)), colour_expected=colour_expected(predictor.spec))
    for a in answers:
        if isinstance(a, dict):
            lab.add(a.get("distance"), a.get("class", NO_WHITE_CELL), predictor.spec, a.get("colour_distance"))
        else:
            lab.add(a.distance, a.label, predictor.spec, a.colour_distance)
    return lab


class RecentCells:
    """The last LAB_WINDOW cells a long-lived service (`wbc serve`) answered, judged as one lab: a lab sending its
    cells a few at a time is as far out of the model's world as one sending a folder, but no request alone holds the
    20 cells a judgment needs. Only how far the cells lie is judged so; blasts belong to one patient's sample and are
    judged per request."""

    def __init__(self, predictor, size: int | None = None):
        self.expected, self.spec = lab_check(predictor).expected, predictor.spec
        self.cells: deque = deque(maxlen=size or LAB_WINDOW)
        self.lock = threading.Lock()

    def judge(self, answers: list) -> LabCheck:
        """A LabCheck of the recent cells, `answers` (result dicts) added."""
        with self.lock:
            self.cells.extend((a.get("distance"), a.get("class", NO_WHITE_CELL), a.get("colour_distance")) for a in answers)
            recent = list(self.cells)
        return far_check(recent, self.expected, self.spec, f"of the last {len(recent)} this server answered",
                         "the images this server was sent lately")


def far_check(cells, expected: float, spec, scope: str, subject: str) -> LabCheck:
    """A LabCheck of how far `cells` ((distance, class, colour distance) triples: a service's or a station's recent
    ones) lie, in features and in colours, blasts not judged; `scope` and `subject` name those cells in its reasons and
    warning."""
    lab = LabCheck(expected=expected, scope=scope, subject=subject, judges_blasts=False,
                   colour_expected=colour_expected(spec))
    for distance, label, colour in cells:
        lab.add(distance, label, spec, colour)
    return lab


LAB_WINDOW = 200  # cells a service judges as one lab (`RecentCells`)


OVEREXPOSED = "overexposed: the background is clipped white and the stain washed out, so a real cell may be missed here"


GREY_SPECK = "greyscale image: without the stain's colours a white cell cannot be told from red cells, so a real cell may be missed here"

TOO_DARK = "too dark (the light is low or the surround black): a cell's stain cannot be read, so a real cell may be missed here"
FAINT = "colours too faint (a faded stain, or haze): a cell's stain cannot be read, so a real cell may be missed here"
SMALL_STAIN = ("something is stained, but less than a nucleus (cut off by the frame, or faint): a real cell may be missed "
               "here")
UNLIKE_TONES = ("colours unlike every training lab's: the stain rule reads a nucleus as their stains show one, so a real "
                "cell may be missed here")


NO_CELL_COLOUR_LIMIT = 4.0  # a smear's view colours this far from every source's: its "no white cell" is not trusted.
# Red cells alone at home stay under it (163 BCCD train windows, each alone, under every colour shift of
# wbc.data.shifts but grey: at most 3.50); validation cells saved with red and blue swapped that the stain rule
# dropped in silence lie beyond it (4.84-7.16, 6 of 480; scripts/no_cell_colours.py, docs/results.md session 32).


def lost_reasons(framed: Framed | None, colour: float | None = None) -> list[str]:
    """Why a "no white cell" answer may have missed a real one: an overexposed smear (`wbc.image.stain.washed_out`;
    Kaggle TEST_SIMPLE at 1.6x exposure: 12 of 71 cells were dropped so), or a greyscale image where something but no
    nucleus reads as stained (a PBC platelet in grey is dark only in its granules), or cells but no nucleus-dark blob
    (Kaggle's nuclei in grey are as pale as its red cells: 95% of TEST_SIMPLE made grey was dropped in silence). A blank
    image or a printed page reads nothing at all: no cell, nothing to look at. Red cells alone in grey are flagged too:
    without the colours they cannot be told from such a cell; so is an image too dark, or its colours too faint, to read
    the stain at all; so is a smear (red cells measured) in colours unlike every training lab's (`Framed.unlike_tones`:
    PBC validation platelets through one of eight drawn cameras, each image alone, 2 of 27 answered "no white cell"
    unflagged; docs/results.md, session 30), or whose view's `colour` distance lies beyond NO_CELL_COLOUR_LIMIT (red
    and blue swapped, which the tone curves do not catch); so, in any colours, is a stained region too small for a
    nucleus (Kaggle TEST: nine labelled eosinophils, under 3 um2 stained in view, had been dropped unflagged;
    docs/results.md, session 35). A run judged for its colours flags the rest (run_reasons_of)."""
    if framed is not None and framed.washed_out:
        return [OVEREXPOSED]
    if framed is not None and not framed.too_small and (framed.too_dark or framed.faint):
        return [TOO_DARK if framed.too_dark else FAINT]
    smear = framed is not None and framed.scale in SMEAR_SCALES
    if smear and (framed.unlike_tones or (not framed.greyscale and colour is not None and colour > NO_CELL_COLOUR_LIMIT)):
        return [UNLIKE_TONES]
    speck = framed is not None and not framed.too_small and framed.stained_um2 >= MIN_STAINED_UM2
    if framed is not None and (framed.grey_unsure or (framed.greyscale and speck)):
        return [GREY_SPECK]
    return [SMALL_STAIN] if speck else []


def no_white_cell(framed: Framed, label: str) -> str | None:
    """Why the image holds no white cell (None: it may). Nothing stained at all (blank, text, only red
    cells), an image too small to hold a cell, or a nucleated class called on a stained speck."""
    if framed.too_small:
        return "no white cell found: the image is too small to hold a cell"
    if framed.purple_only:  # a nucleus the stain rule cannot read: classified and flagged (PURPLE_ONLY), never dropped
        return None
    if framed.stained_um2 < MIN_STAINED_UM2:
        return "no white cell found: nothing in the image is stained like a nucleus"
    if label not in NON_NUCLEATED and framed.stained_um2 < MIN_NUCLEUS_UM2:
        return f"no white cell found: the largest stained region ({framed.stained_um2:.1f} um2) is too small for a nucleus"
    return None


def colour_distance(check: ColourCheck | None, view) -> float | None:
    """How far a view's (uint8 3 x H x W, tensor or array) colours lie from every training source's (None: not measured)."""
    if check is None or view is None:
        return None
    return round(check.distance(view_colours(np.asarray(view).transpose(1, 2, 0))), 3)


RECOLOURED = "answer changes in another training lab's colours"


def recoloured_views(check: ColourCheck, view) -> torch.Tensor:
    """A view (uint8 3 x H x W) moved into each source's mean view colours (Reinhard), as a batch: the cell as each
    training lab's stain and light would have shown it."""
    rgb = np.ascontiguousarray(np.asarray(view).transpose(1, 2, 0))
    return torch.stack([torch.from_numpy(np.ascontiguousarray(reinhard(rgb, t).transpose(2, 0, 1))) for t in check.targets()])


def answers_in_colours(check: ColourCheck, classes: list[str], views: list, probabilities) -> list[list[tuple[str, str]]]:
    """For each view, (source, the class answered) with the view moved into each source's colours; `probabilities` maps
    a uint8 batch to class probabilities (one call for all the views: a Predictor's engine, or a Ray worker's session)."""
    probs = probabilities(torch.cat([recoloured_views(check, v) for v in views]))
    top = [classes[int(i)] for i in probs.argmax(1)]
    n = len(check.names)
    return [list(zip(check.names, top[j * n : (j + 1) * n])) for j in range(len(views))]


def needs_recheck(answer: "Prediction", check: ColourCheck | None, classes: list[str]) -> bool:
    """A sure answer (nothing flags it) of a known type whose view's colours lie beyond the check's `recheck`: asked
    again in each source's colours. A sure answer whose colours lie off the sources' may rest on this lab's stain and
    light rather than on the cell (PBC's validation cells in a lab drawn from the sources' span, one at a time: the
    answers left unflagged 92.2% right, 98.3% with the question asked; docs/results.md, session 24)."""
    return check is not None and not answer.review and answer.label in classes and check.asks_again(answer.colour_distance)


def with_recheck(answer: "Prediction", seen: list[tuple[str, str]]) -> "Prediction":
    """`answer` flagged RECOLOURED when the cell is answered another type in any source's colours (`seen`)."""
    other = [f"{c} in {name}'s" for name, c in seen if c != answer.label]
    if other:
        answer.review, answer.review_reason = True, f"{RECOLOURED} ({', '.join(other)})"
    return answer


class Predictor:
    """model.predict(paths / bytes / PIL images / HxWx3 uint8 arrays) -> list[Prediction].

    The engine (PyTorch or ONNX Runtime) maps a uint8 N x 3 x H x W batch to probabilities; the
    Predictor owns what surrounds it: decoding, framing, batching, labels and the review flag.
    """

    def __init__(self, engine, meta: dict, path: Path):
        from wbc.models.classifier import ModelSpec

        self.engine, self.meta, self.path = engine, meta, path
        self.spec = ModelSpec.from_dict(meta["spec"])
        self.colour_check = ColourCheck.from_spec(self.spec.colours)
        self._beside: dict[bool, Predictor] = {}  # this model's session beside a framing thread (beside_framing)
        self.classes = list(self.spec.classes)

    @property
    def sha256(self) -> str | None:
        """The model file's SHA-256 (what a lab's validation records), read once; None for a model not from a file."""
        if not hasattr(self, "_sha256"):
            self._sha256 = sha256(self.path) if self.path and Path(self.path).is_file() else None
        return self._sha256

    @property
    def model(self):
        """The PyTorch network (heat-maps, fine-tuning); None for an ONNX model."""
        return getattr(self.engine, "model", None)

    def beside_framing(self, measures_scale: bool) -> "Predictor":
        """This model on the ONNX Runtime session that works best beside a thread framing the next files (a folder run,
        wbc.infer.batch). When framing measures every image's red cells it costs as much as the network, so the session
        takes one thread fewer than the machine's cores, where its own threads would wait on the busy one (2 cores, 512
        Kaggle files: 74.9 files/s against 52.8 with two threads, 47.6 framing in turn). With the scale given framing is
        a fifth of the work: all the cores, their idle threads sleeping instead of spinning so the framing thread gets
        its turn (2 cores, 1,024 Kaggle files, three runs each: 120.5 -> 138.7 files/s; docs/results.md). Itself under
        PyTorch; made once per kind, so a caller classifying folder after folder reuses it."""
        if not isinstance(self.engine, OnnxEngine):
            return self
        cores = os.cpu_count() or 1
        threads, spinning = (min(self.engine.threads, max(1, cores - 1)), True) if measures_scale else (self.engine.threads, False)
        if threads == self.engine.threads and spinning == self.engine.spinning:
            return self
        if measures_scale not in self._beside:
            self._beside[measures_scale] = Predictor(OnnxEngine(self.engine.path, threads, spinning), self.meta, self.path)
        return self._beside[measures_scale]

    def frame(self, image, px_per_um: float | None = None) -> Framed:
        """One image (path, bytes, PIL, RGB array) framed as this model sees cells (scale measured unless given)."""
        return frame_source(image, self.spec, px_per_um)

    def input_tensor(self, image, px_per_um: float | None = None) -> torch.Tensor:
        """One image as the uint8 3xHxW input this model takes."""
        return self.frame(image, px_per_um).pixels

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.engine(batch)

    def scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(probabilities N x classes, distance to the nearest known type N or None) of uint8 inputs."""
        return self.engine.scores(batch)

    def predict_framed(self, images: list, batch_size: int = 32, on_batch=None, px_per_um: float | None = None,
                       distances: list | None = None) -> tuple[torch.Tensor, list[Framed]]:
        """(class probabilities N x classes, each image's Framed) in batches; on_batch(n) is told after each batch;
        `distances`, when given, is extended with each image's distance to the known types (None: not measured)."""
        check_scale(px_per_um)
        out, framed = [], []
        for i in range(0, len(images), batch_size):
            chunk = [self.frame(im, px_per_um) for im in images[i : i + batch_size]]
            probs, dist = self.scores(torch.stack([f.pixels for f in chunk]))
            out.append(probs)
            if distances is not None:
                distances += dist.tolist() if dist is not None else [None] * len(chunk)
            framed += chunk
            if on_batch:
                on_batch(len(chunk))
        return (torch.cat(out) if out else torch.zeros(0, len(self.classes))), framed

    def predict_proba(self, images: list, batch_size: int = 32, on_batch=None, px_per_um: float | None = None) -> torch.Tensor:
        """Class probabilities (N x classes), the model's alone (no white-cell rule)."""
        return self.predict_framed(images, batch_size, on_batch, px_per_um)[0]

    def to_prediction(self, p: torch.Tensor, source: str, framed: Framed | None = None, distance: float | None = None,
                      px_per_um: float | None = None, view: torch.Tensor | None = None, recheck: bool = True,
                      colour: float | None = None) -> Prediction:
        """The answer for one image: a known type, UNIDENTIFIED (far from every known type: the type is not given),
        or NO_WHITE_CELL (nothing stained like a white cell), with the review flag and its reasons (`px_per_um`: the
        field's scale, for a cell cut from a field without a Framed of its own, `view` its input pixels). The colours'
        distance is judged over a run (`LabCheck`: one cell's colours say little of its lab), and a sure answer whose
        colours lie off the sources' is asked again in theirs (`recheck`; False: the caller asks for a batch at once);
        `colour`: the view's colour distance, measured where its pixels were (Ray's workers)."""
        k = int(p.argmax())
        label = self.classes[k]
        note = no_white_cell(framed, label) if framed is not None else None
        distance = None if distance is None else round(float(distance), 3)
        probabilities = {c: float(v) for c, v in zip(self.classes, p)}
        shown = NO_WHITE_CELL if note else UNIDENTIFIED if beyond(distance, self.spec.far_distance) else label
        pixels = getattr(framed, "pixels", None) if framed is not None else view
        colour = colour_distance(self.colour_check, pixels) if colour is None else colour
        reasons = lost_reasons(framed, colour) if note else \
            alert_reasons(probabilities, shown) + review_reasons(float(p[k]), self.spec, framed, distance, px_per_um, label)
        answer = Prediction(source=source, label=shown, probability=float(p[k]), probabilities=probabilities, review=bool(reasons),
                            px_per_um=round(framed.px_per_um, 3) if framed else None, scale=framed.scale if framed else None, note=note,
                            review_reason="; ".join(reasons) or None, distance=distance,
                            colour_distance=colour, cells_seen=None if note or framed is None else framed.cells_seen)
        return self.recheck([answer], [pixels])[0] if recheck else answer

    def to_predictions(self, probs, sources: list[str], framed: list, distances=None, recheck: bool = True) -> list[Prediction]:
        """The answers for a batch of framed images (`distances`: one each, or None), the sure ones in colours off the
        sources' asked again in one network call (`recheck`; False: as they stand)."""
        distances = [None] * len(framed) if distances is None else distances
        answers = [self.to_prediction(p, s, f, d, recheck=False) for p, s, f, d in zip(probs, sources, framed, distances)]
        return self.recheck(answers, [f.pixels for f in framed]) if recheck else answers

    def recheck(self, answers: list[Prediction], views: list) -> list[Prediction]:
        """`answers` (each with its view) with RECOLOURED on every sure one that `needs_recheck` and is answered another
        type in any training source's colours: one network call for all of them."""
        todo = [i for i, a in enumerate(answers) if needs_recheck(a, self.colour_check, self.classes)]
        if todo:
            seen = answers_in_colours(self.colour_check, self.classes, [views[i] for i in todo], lambda b: self.scores(b)[0])
            for i, s in zip(todo, seen):
                with_recheck(answers[i], s)
        return answers

    def predict(self, images, batch_size: int = 32, px_per_um=None) -> list[Prediction]:
        """`px_per_um`: a number (given), None (measured in each image), or `wbc.image.framing.run_scale(files)` for
        a folder from one microscope (taken by its images unless their own red cells say strongly otherwise, as
        `wbc predict` does; wbc.image.framing.image_scale)."""
        images = [images] if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)) else list(images)
        dist: list = []
        probs, framed = self.predict_framed(images, batch_size, px_per_um=px_per_um, distances=dist)
        names = [str(im) if isinstance(im, (str, os.PathLike)) else f"<{type(im).__name__}>" for im in images]
        answers = self.to_predictions(probs, names, framed, dist)
        return flag_run(answers, lab_check(self, answers))


def check_scale(px_per_um) -> None:
    """A given scale is positive: a negative one framed every cell at a nonsense size, answered in silence."""
    if isinstance(px_per_um, (int, float)) and px_per_um < 0:
        raise WbcError(f"px_per_um must be positive (pixels a micrometre; None: measured), not {px_per_um}")


def load_model(path: str | os.PathLike | None = None, device: str | None = None, threads: int | None = None) -> Predictor:
    """Load a model file (default: the one shipped in the package) ready to predict.

    `.onnx` files run on ONNX Runtime's CPU provider; anything else is read as a native
    (safetensors) wbc model and runs in PyTorch.
    """
    p = Path(path) if path else shipped_model_path()
    if path is None and not p.is_file():
        raise WbcError(f"the shipped model is missing from this install ({p}); reinstall wbc or pass --model")
    if p.suffix.lower() == ".onnx":
        engine = OnnxEngine(p, threads)
        return Predictor(engine, engine.meta, p)
    dev = pick_device(device or "auto", threads)
    model, meta = load_model_file(p, dev)
    if (meta.get("info") or {}).get("partial"):
        log.warning(f"{p} is a training run's best weights so far, not the finished model: its review threshold and "
                    "distance limits are not fitted yet, so answers are flagged by the defaults; use it when `wbc train` has ended")
    return Predictor(TorchEngine(model, dev), meta, p)


def fastest(predictor: Predictor, threads: int | None = None) -> Predictor:
    """The same model on ONNX Runtime (fp32, exported once into the wbc cache) when that is
    installed: about 2x PyTorch eager on 2 CPU cores, probabilities equal to 1e-5. Falls back
    to `predictor` itself."""
    if predictor.model is None:
        return predictor
    try:
        from wbc.models.export import cached_onnx

        fast = load_model(cached_onnx(predictor), threads=threads)
    except (ImportError, WbcError) as e:
        log.warning(f"ONNX Runtime unavailable ({e}); using PyTorch")
        return predictor
    fast.path = predictor.path  # report the model the user chose, not the cache file
    return fast


def exported(path: str | os.PathLike | None = None, threads: int | None = None) -> Predictor | None:
    """The native model file's ONNX export, when an earlier run left one in the wbc cache (`fastest`: a run of 200
    files or more, `wbc serve`, `--engine onnx`), loaded without building the PyTorch model: a one-image `wbc predict`
    then skips timm's import and the weights (about 2 s of its 5). None when there is none yet, or for an .onnx file,
    a missing one, or a training run's partial weights (whose warning `load_model` gives)."""
    p = Path(path) if path else shipped_model_path()
    if p.suffix.lower() == ".onnx" or not p.is_file():
        return None
    out = export_path(p)
    if not out.is_file() or (read_metadata(p).get("info") or {}).get("partial"):
        return None
    fast = load_model(out, threads=threads)
    fast.path = p  # report the model the user chose, not the cache file
    return fast


def load_fastest(path: str | os.PathLike | None = None, threads: int | None = None) -> Predictor:
    """The model on ONNX Runtime: its cached export as it is (`exported`), else the native file loaded and exported."""
    return exported(path, threads) or fastest(load_model(path, threads=threads), threads)


def default_manifest(predictor: Predictor) -> str | None:
    """The split manifest shipped beside the model, when its hash is the one the model was trained with."""
    from wbc.data.split import manifest_hash

    info = predictor.meta.get("info", {})
    wanted = {info.get("split_manifest_sha256")} | {s.get("manifest_sha256") for s in info.get("sources", {}).values()}
    for candidate in (predictor.path.with_name("split_manifest.csv"), *sorted(predictor.path.parent.glob("manifests/*.csv"))):
        if candidate.is_file() and manifest_hash(candidate) in wanted - {None}:
            return str(candidate)
    return None
