"""How an image file becomes the model's input: decode fast, find the stained cell, crop, resize.

The chain: wbc.image.decode (bytes -> RGB) -> wbc.image.stain (where the cell is) ->
wbc.image.scale (pixels a micrometre) -> here (crop and resize; OpenCV's area filter).

Framing: a model sees a square `field_um` micrometres wide centred on the stained (purple) cell,
resized to its input size, so cells from any microscope reach the network at one physical scale.
The scale comes from the caller (`--px-per-um`, an adapted model's lab scale, a smear field's
known magnification) or is measured from the red cells in the image (wbc.image.scale); an image
without red cells to measure (a tight crop, the cell filling the frame), or whose "red cells" would
make the stained cell implausibly wide (a tight crop's fragments and granules), takes it from the
stained cell itself (its largest stained region spans `NUCLEUS_EXTENT_UM`), and only an image with nothing
stained either has it assumed from its width (`ASSUMED_FIELD_UM`). The result says which
(`scale`: given | measured | corrected | run | cell | assumed; run: an image without red cells takes the
median measured over its run's images of its size, `RunScale`; corrected: an image whose red cells were
measured takes that median too, unless its own estimate is strong and far from it, `image_scale`). The
cell is found by its stain (wbc.image.stain), read from the image as it is or, when that shows no red
cells or no nucleus, with its background made neutral (`stain_reading`). Models of
wbc <= 0.1 (`field_um` 0) framed a `crop`-pixel square of the 320-pixel-wide Kaggle frame instead;
they still load.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from wbc.image.decode import MIN_SIDE, decode, decode_with_quality, without_margins
from wbc.image.scale import estimate_scale, plausible, ruler_image
from wbc.image.stain import (
    FAINT_CHROMA,
    GREY_CELLS,
    GREY_CHROMA,
    MIN_NUCLEUS_UM2,
    MIN_STAINED_UM2,
    NUCLEUS_EXTENT_UM,
    cell_centre,
    colour_strength,
    darkened,
    find_cell,
    largest_stained_um2,
    neutral_background,
    noise_sigma,
    purple_um2,
    reinhard,
    stain_colour,
    stain_readable,
    stained_extent_px,
    tinted_share,
    too_dark,
    washed_out,
)

KAGGLE_WIDTH = 320  # the frame legacy (field_um 0) crop sizes are expressed in
KAGGLE_PX_PER_UM = 6.81  # the Kaggle 320x240 crops (wbc data scale, median of 80 TRAIN images)
ASSUMED_FIELD_UM = 40.0  # a single-cell image with no measurable red cells: assume it is this wide
SMEAR_SCALES = ("measured", "corrected")  # `Framed.scale` kinds read from red cells: the image shows a smear, not a blank or text


def crop_square(rgb: np.ndarray, cx: float, cy: float, side: int, height: int | None = None) -> np.ndarray:
    """A side x side (or side x height) window centred on (cx, cy); outside the image is black (as the Kaggle fill)."""
    h, w = rgb.shape[:2]
    ch = height or side
    x0, y0 = int(round(cx - side / 2)), int(round(cy - ch / 2))
    out = np.zeros((ch, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + ch, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return out


@dataclass
class Framed:
    """A model input and what framing it learnt about the image."""

    pixels: torch.Tensor  # uint8 3 x H x W
    px_per_um: float
    scale: str  # given | measured | corrected | run | cell | assumed (see the module docstring)
    stained_um2: float  # largest stained region: the no-white-cell rule reads it
    too_small: bool = False  # under MIN_SIDE pixels a side
    washed_out: bool = False  # an overexposed smear (background clipped white, cells tinted) with no nucleus-sized stain
    noise: float = 0.0  # grey levels (wbc.image.stain.noise_sigma)
    overexposed: bool = False  # the background clipped white (wbc.image.stain.washed_out), whatever the cell shows
    greyscale: bool = False  # no colour to speak of (wbc.image.stain.is_greyscale): the stain cannot be seen
    grey_unsure: bool = False  # greyscale, no nucleus-dark blob, but cells (red or white) to be seen: a real cell may be missed
    jpeg_quality: int | None = None  # the quality a JPEG file was saved at (frame_source); None: not a JPEG file, or not known
    stain_colour: float | None = None  # how blue the stain is against the light (wbc.image.stain.stain_colour); None: not read
    purple_only: bool = False  # in colour, no nucleus-sized stain, but a purple one (`purple_um2`): classified and flagged
    too_dark: bool = False  # the light too low (or a black surround) to read "nothing stained" as "no cell" (wbc.image.stain.too_dark)
    faint: bool = False  # colours too faint (FAINT_CHROMA) to read "nothing stained" as "no cell"
    unlike_tones: bool = False  # its colours outside every training lab's tones (wbc.image.tone.curves_for_ruler); not
    # asked when the scale is given
    cells_seen: int | None = None  # stained cells the image shows (wbc.image.stain.find_cell): the view is of the one
    # nearest its middle; None: not counted (a centre given, an old model's framing, or nothing stained to count: a
    # greyscale image, a nucleus found by its purple or darkness alone)


@dataclass(frozen=True)
class RunScale:
    """The median red-cell scale of a run's images, per image size (one camera, one microscope), passed where a scale
    may be given. Taken by an image whose own red cells cannot be measured, instead of the guess from its stained
    cell's size (that guess assumes a typical nucleus: Munich train blasts without red cells came out at 1.38x their
    source's scale, 14 of 19 more than 25% off, so the blast reached the network shrunk to a lymphocyte's size), and by
    one whose own estimate is not both strong and far from it (`STRONG_RBCS`, `FAR_OFF`). Per size, so a folder pooling two
    microscopes does not give one's scale to the other's images (pooled validation: Munich blast recall 0.83 with one
    median for all, 0.95 per source)."""

    px_per_um: float  # the median of its sizes' scales (what is reported for the run)
    sizes: tuple = ()  # ((short side, long side), px/um) of each image size with enough images; () = one for all
    other: float | None = None  # the images of every other size together (crops cut to each cell's own size)
    one_microscope: bool = True  # the scales agree within FAR_OFF: an image of a size not measured takes px_per_um

    def for_shape(self, shape) -> float | None:
        """The scale an image of this shape (H x W ...) takes; None: its size had too few images to say, in a run
        whose sizes disagree (PBC crops come in three sizes from one microscope; a pooled folder in several)."""
        found = dict(self.sizes).get(tuple(sorted(int(v) for v in shape[:2])))
        return found or self.other or (self.px_per_um if self.one_microscope else None)


RUN_SCALE_MIN_IMAGES = 10  # a run's scale (for one image size) rests on at least this many images with red cells
RUN_SCALE_MIN_SHARE = 0.5  # ... and in at least this share of them. Sets of whole images show them in 84% (Munich
# test) to 100% (Kaggle TEST, PBC test, BCCD) of 50; of 90 PBC cells cut tight, shrunk to 120x120 and cast yellow (an
# analyser's crops) 44% gave an estimate, from fragments, at about 0.5x the truth, and the whole run was framed at that
# (45.6% right; scripts/analyser_crops.py)
STRONG_RBCS = 7  # an image's own estimate from at least this many red cells ...
FAR_OFF = 1.25  # ... and more than this factor off its run's scale is kept; any other takes the run's (scripts/scale_rules.py)


def _size(image) -> tuple[int, int] | None:
    """(short side, long side) from the file header (no decode); None for what cannot be read."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(image, np.ndarray):
            h, w = image.shape[:2]
        elif isinstance(image, Image.Image):
            w, h = image.size
        else:
            with Image.open(io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image) as im:
                w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return (min(w, h), max(w, h))


def run_scale(images, sample: int = 50) -> RunScale | None:
    """The run's scale from (an even sample of) its images of each size; None when no size has 10 images showing red
    cells to measure (a folder of tight crops: each image then takes its scale from its own cell), and without
    reading any for a run of fewer than 10 images (a single image would only be measured twice). Sizes with fewer
    than 10 images are measured together (`other`: a folder of crops cut to each cell's own size)."""
    images = list(images)
    if len(images) < RUN_SCALE_MIN_IMAGES:
        return None
    groups: dict[tuple[int, int], list] = {}
    for im in (images[i] for i in np.unique(np.linspace(0, len(images) - 1, min(len(images), 2000)).astype(int))):
        size = _size(im)
        if size:
            groups.setdefault(size, []).append(im)
    sizes, rest = [], []
    for size, members in sorted(groups.items()):
        px = _median_scale(members, sample) if len(members) >= RUN_SCALE_MIN_IMAGES else None
        if px:
            sizes.append((size, px))
        else:
            rest += members
    other = _median_scale(rest, sample) if len(rest) >= RUN_SCALE_MIN_IMAGES else None
    values = [px for _, px in sizes] + ([other] if other else [])
    if not values:
        return None
    return RunScale(float(np.median(values)), tuple(sizes), other, max(values) / min(values) <= FAR_OFF)


def _median_scale(images: list, sample: int) -> float | None:
    """The median red-cell scale of (an even sample of) `images`; None unless 10 and half of them show red cells
    whose scale is plausible (`RUN_SCALE_MIN_SHARE`)."""
    from wbc.image.scale import source_scale

    s = source_scale(images, sample, plausible_only=True)
    return s["px_per_um"] if s["found"] >= max(RUN_SCALE_MIN_IMAGES, RUN_SCALE_MIN_SHARE * s["images"]) else None


def image_scale(rgb: np.ndarray, px_per_um: float | None = None, run: float | None = None,
                ruler: np.ndarray | None = None) -> tuple[float, str]:
    """(pixels a micrometre, how it was known): given, else measured from red cells, else the run's (`RunScale`),
    else from the stained cell, else assumed from the width (`stain_reading` decides which image, as it is or
    balanced, is read). Red cells that would make the stained cell wider than `wbc.image.scale.MAX_STAINED_EXTENT_UM`
    were not red cells (fragments, granules): the estimate is dropped as if none were found. In a run, an image
    whose red cells were measured takes the run's median (`corrected`) unless its own estimate rests on at least
    `STRONG_RBCS` red cells and lies more than `FAR_OFF` off it (a field really at another magnification): one
    microscope has one scale, and one image's few red cells, cut by its edges, measure it worse than the run's many.
    Validation, own estimate -> this rule: Kaggle 83.86% -> 84.91%, PBC 95.77% -> 95.92%, Munich 95.8% -> 99.2%
    (blast recall 0.95 -> 1.0; scripts/scale_trust.py, scripts/scale_rules.py). `ruler`: the image the red cells
    are measured on instead (wbc.image.scale.ruler_image, of the image as it came), when there is one (None: `rgb` itself)."""
    if px_per_um:
        return float(px_per_um), "given"
    s = estimate_scale(rgb if ruler is None else ruler) if min(rgb.shape[:2]) >= MIN_SIDE else None
    if s is not None and s.found and plausible(rgb, s):
        if run and not (s.rbcs >= STRONG_RBCS and max(s.px_per_um / run, run / s.px_per_um) > FAR_OFF):
            return float(run), "corrected"
        return s.px_per_um, "measured"
    if run:
        return float(run), "run"
    extent = stained_extent_px(rgb)
    if extent >= 8:
        return extent / NUCLEUS_EXTENT_UM, "cell"
    return rgb.shape[1] / ASSUMED_FIELD_UM, "assumed"


def resize_to(rgb: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    h, w = size_hw
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def view(rgb: np.ndarray, size_hw: tuple[int, int], field_um: float, px_per_um: float, centre: tuple[float, float] | None = None) -> torch.Tensor:
    """The field_um-wide square around `centre` (default: the stained cell) at the model's input size."""
    side = max(8, round(field_um * px_per_um))
    return resize_to(crop_square(rgb, *(centre or cell_centre(rgb, px_per_um)), side), size_hw)


def legacy_view(rgb: np.ndarray, size_hw: tuple[int, int], crop: int, px_per_um: float | None = None,
                centre: tuple[float, float] | None = None) -> torch.Tensor:
    """Framing of wbc <= 0.1 models: a `crop`-pixel square of the 320-wide Kaggle frame (0: the whole frame)."""
    scale = px_per_um / KAGGLE_PX_PER_UM if px_per_um else rgb.shape[1] / KAGGLE_WIDTH
    if centre is not None and not crop:
        rgb = crop_square(rgb, *centre, round(KAGGLE_WIDTH * scale), round(KAGGLE_WIDTH * 3 / 4 * scale))
    elif crop:
        rgb = crop_square(rgb, *(centre or cell_centre(rgb)), max(8, round(crop * scale)))
    return resize_to(rgb, size_hw)


def balanced(pixels: torch.Tensor) -> torch.Tensor:
    """A view (3xHxW uint8) with its background made neutral (von Kries on its brightest quarter): the colour of
    another lab's light and stain taken out before the model sees the cell. Training applies it after the
    photometric augmentation, inference to every view, so both see the same kind of input."""
    return on_view(pixels, neutral_background)


def stain_normalised(pixels: torch.Tensor) -> torch.Tensor:
    """A view (3xHxW uint8) with its colours moved to one fixed L*a*b* world (wbc.image.stain.reinhard)."""
    return on_view(pixels, reinhard)


def on_view(pixels: torch.Tensor, recolour) -> torch.Tensor:
    """`recolour` (an HxWx3 uint8 function) applied to a 3xHxW view; the view itself when it returns its input."""
    rgb = pixels.permute(1, 2, 0).numpy()
    out = recolour(rgb)
    return pixels if out is rgb else torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def colour_view(pixels: torch.Tensor, white_balance: bool = False, stain_norm: bool = False) -> torch.Tensor:
    """The colour steps a model was trained with, in training's order: background made neutral, then the stain
    normalised. Training applies them after the photometric augmentation, inference to every view."""
    if white_balance:
        pixels = balanced(pixels)
    return stain_normalised(pixels) if stain_norm else pixels


def source_image(rgb: np.ndarray, spec, in_place: bool = False) -> np.ndarray:
    """The image every later step reads (scale, stain, the cell's centre, the view): for a model trained so,
    with the whole image's background made neutral first. The stain rules read blue minus red against a
    neutral light: under a cyan cast all of a Kaggle smear is "stained" and under a yellow one none of it,
    so the centre lands on the image's middle instead of the cell (159 of 160 Kaggle validation cells
    moved more than 3 um under cyan; 1 after this balance). `in_place`: over `rgb` (wbc.image.stain.neutral_background)."""
    return neutral_background(rgb, in_place) if getattr(spec, "white_balance_image", False) else rgb


def model_view(pixels: torch.Tensor, spec) -> torch.Tensor:
    return colour_view(pixels, spec.white_balance, spec.stain_norm)


def cell_view(rgb: np.ndarray, spec, px_per_um: float, centre: tuple[float, float]) -> torch.Tensor:
    """The model's input for a cell at `centre` of an image of known scale (a smear field; already through
    `source_image`, once for all its cells): no checks, no estimate."""
    if spec.field_um:
        return model_view(view(rgb, spec.input_size, spec.field_um, px_per_um, centre), spec)
    return legacy_view(rgb, spec.input_size, spec.crop, px_per_um, centre)


def frame(rgb: np.ndarray, spec, px_per_um: float | RunScale | None = None, centre: tuple[float, float] | None = None) -> Framed:
    """The input `spec` (a ModelSpec) asks for, from an RGB image; `px_per_um` overrides the spec's own scale (a
    `RunScale` only stands in for red cells the image lacks or measures weakly)."""
    is_run = isinstance(px_per_um, RunScale)
    run = px_per_um.for_shape(rgb.shape) if is_run else None
    px_per_um = None if is_run else px_per_um
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        black = torch.zeros(3, *spec.input_size, dtype=torch.uint8)
        return Framed(black, w / ASSUMED_FIELD_UM, "assumed", 0.0, too_small=True)
    # on the pixels as they came (balanced, a background bright in one channel reads white), and without a white border,
    # which is no smear background (every answer was flagged overexposed)
    clipped = washed_out(without_margins(rgb))
    dim = too_dark(rgb)
    strength = colour_strength(rgb)
    grey = strength < GREY_CHROMA
    given = px_per_um or spec.px_per_um
    ruler = None if given or grey or clipped else ruler_image(rgb, checked=True)  # an unlike lab's red cells: on BCCD's tones
    rgb = source_image(rgb, spec)
    if not spec.field_um and not px_per_um:
        return Framed(legacy_view(rgb, spec.input_size, spec.crop, None, centre), w / ASSUMED_FIELD_UM, "assumed", largest_stained_um2(rgb, w / ASSUMED_FIELD_UM))
    read, px, how, stained = stain_reading(rgb, given, run, ruler)
    seen = None
    if spec.field_um:
        if centre is None:
            centre, seen = find_cell(read, px)
        pixels = model_view(view(rgb, spec.input_size, spec.field_um, px, centre), spec)
    else:
        pixels = legacy_view(rgb, spec.input_size, spec.crop, px_per_um, centre)
    lost = stained < MIN_NUCLEUS_UM2 and washed_out(read) and (stained >= MIN_STAINED_UM2 or tinted_share(read) >= 0.01)
    unsure = grey and stained < MIN_NUCLEUS_UM2 and largest_stained_um2(read, px, GREY_CELLS) >= MIN_NUCLEUS_UM2
    purple = not grey and not lost and stained < MIN_NUCLEUS_UM2 and purple_um2(read, px) >= MIN_NUCLEUS_UM2
    return Framed(pixels, px, how, stained, washed_out=lost, noise=noise_sigma(rgb), overexposed=clipped, greyscale=grey, grey_unsure=unsure,
                  stain_colour=None if grey else stain_colour(read), purple_only=purple, too_dark=dim,
                  faint=not grey and strength < FAINT_CHROMA, unlike_tones=ruler is not None, cells_seen=seen or None)


def frame_source(source, spec, px_per_um: float | RunScale | None = None, name: str | None = None) -> Framed:
    """`frame` of a path, bytes, PIL image or array, with the JPEG quality of a file (or bytes) read on the way."""
    rgb, quality = decode_with_quality(source, name)
    framed = frame(rgb, spec, px_per_um)
    framed.jpeg_quality = quality
    return framed


def stain_reading(rgb: np.ndarray, px_per_um: float | None, run: float | None = None,
                  ruler: np.ndarray | None = None) -> tuple[np.ndarray, float, str, float]:
    """(the image the stain rules read, pixels a micrometre, how known, largest stained area um2). The image as
    it is, unless that finds no red cells or no nucleus-sized stain, or its background passes for stain: then
    with its background made neutral (a yellow or cyan cast, a red-purple stain), so a real cell is not dropped
    for its lab's colours and the view is centred on it. An overexposed image (its background clipped white) that
    still shows no nucleus-sized stain is read once more darkened, where the washed-out stain shows again. `ruler`:
    the image its red cells are measured on, whichever is read (image_scale)."""
    readable = stain_readable(rgb)
    if readable is not rgb:  # the background passes for stain: the image as it is cannot be read at all
        return _reading(readable, px_per_um, run, ruler)
    reading = _reading(rgb, px_per_um, run, ruler)
    _, _, how, stained = reading
    if how in ("given", "measured", "corrected") and stained >= MIN_NUCLEUS_UM2:
        return reading
    balanced = neutral_background(rgb)
    if balanced is not rgb:
        reading = _reading(balanced, px_per_um, run, ruler)
    if reading[3] < MIN_NUCLEUS_UM2 and washed_out(reading[0]):
        darker = _reading(darkened(reading[0]), px_per_um, run, ruler)
        return darker if darker[3] > reading[3] else reading
    return reading


def _reading(rgb: np.ndarray, px_per_um: float | None, run: float | None = None,
             ruler: np.ndarray | None = None) -> tuple[np.ndarray, float, str, float]:
    px, how = image_scale(rgb, px_per_um, run, ruler)
    return rgb, px, how, largest_stained_um2(rgb, px)


def load_input(source, spec, px_per_um: float | None = None) -> torch.Tensor:
    return frame(decode(source), spec, px_per_um).pixels
