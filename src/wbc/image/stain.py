"""What the stain says: where the white cell is, and whether anything is stained at all.

The WBC is the only thing in a Romanowsky-stained smear much bluer than red, so "blue minus red
above a threshold" finds it; the same rule frames WBCs found in whole smear fields (wbc count) and
tells an image with no white cell in it. The rule reads an image whose background was first made
neutral (`neutral_background`): under a yellow cast (blue turned down) or a red-purple stain the
nucleus is no longer "blue minus red" in the raw pixels, and under a cyan cast everything is, so
real cells were dropped and red cells went unmeasured (scripts/no_cell_dropped.py: 79-93% of real
cells dropped under a yellow cast before, none after). Only these rules read the balanced image;
the model sees the pixels as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

STAIN_THRESHOLD = 40  # blue - red, 0..255: nucleus and stained cytoplasm of a WBC (centring)
STAINED_THRESHOLD = 25  # a looser one for "is anything stained at all" (PBC monocytes stain paler)
MIN_STAINED_UM2 = 0.05  # below this nothing in the image is stained: no cell of any kind (PBC platelets: >= 0.08)
NUCLEUS_EXTENT_UM = 11.0  # median extent of the largest stained region of a WBC image, measured with the red-cell scale
# on 200 train images a source: Kaggle 10.7, PBC 11.1, Munich 13.4 um (per class 5 (platelets) to 16 (blasts))
MIN_NUCLEUS_UM2 = 3.0  # a white cell's (or erythroblast's) stained nucleus is larger (PBC train: >= 3.6 um2, Kaggle >= 23 but 0.1% cut-off cells)
STAINED_BACKGROUND = 15  # blue - red of the background above which the rule reads a cast, not a cell: Kaggle, PBC and
# Munich validation backgrounds -54 to 5, under the cyan cast of wbc.data.shifts 30 to 81


def stain_mask(rgb: np.ndarray, threshold: int = STAIN_THRESHOLD) -> np.ndarray:
    """True where blue exceeds red by `threshold`: WBC nuclei and granules, not red cells or plasma."""
    return (rgb[..., 2].astype(np.int16) - rgb[..., 0].astype(np.int16)) > threshold


PURPLE_THRESHOLD = 40  # blue - green, 0..255: a nucleus in any Romanowsky lab's colours, violet to magenta, where blue
# over red fails (Kaggle's cells in Munich's light and stain); red cells of BCCD fields, under casts too, reach at most 1.3 um2


def purple_mask(rgb: np.ndarray, threshold: int = PURPLE_THRESHOLD) -> np.ndarray:
    """True where blue exceeds green by `threshold`: a nucleus whether its stain leans blue or red."""
    return (rgb[..., 2].astype(np.int16) - rgb[..., 1].astype(np.int16)) > threshold


def largest_centre(mask: np.ndarray, least: float) -> tuple[float, float] | None:
    """(x, y) of the largest connected region of `mask`; None without one of `least` pixels."""
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (float(centroids[k][0]), float(centroids[k][1])) if stats[k, cv2.CC_STAT_AREA] >= least else None


SPECK_PX = 20  # a region smaller than this (pixels of the 160-wide copy cell_centre reads) is a speck, no cell to centre on


def cell_centre(rgb: np.ndarray, px_per_um: float | None = None) -> tuple[float, float]:
    """(x, y) of the white cell a single-cell image is cut around (`find_cell`)."""
    return find_cell(rgb, px_per_um)[0]


def find_cell(rgb: np.ndarray, px_per_um: float | None = None) -> tuple[tuple[float, float], int]:
    """((x, y), cells seen): the largest stained region, found at low resolution. With the scale known and more than one stained
    cell in the image (`stained_cells`), of the largest stained region of the cell nearest the image's middle: a
    single-cell image is cut around its cell, and a bigger neighbour in a corner is not the cell asked about
    (validation images whose centre moves: Kaggle 15 of 1,915, 6 -> 8 answered right; PBC 10 of 638, 5 -> 10, its
    unflagged answers 4 of 5 -> 8 of 8 right; Munich none; scratch check, docs/results.md). With nothing stained
    beyond specks, of the largest purple region (`purple_mask`: a nucleus in another lab's colours), else of the largest
    nucleus-dark blob (`dark_centre`: a greyscale image), and only without either the image's middle: Kaggle's cells
    lie a median 11 um from it, so a view centred there showed half the cell. Also how many stained cells the image
    shows (0: none beyond specks; more than 1 counted only with the scale known): a whole field given as one image
    is answered for one cell, and the user is told of the others."""
    h, w = rgb.shape[:2]
    step = max(1, w // 160)
    small = rgb[::step, ::step]
    mask = stain_mask(small).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1 or stats[1:, cv2.CC_STAT_AREA].max() < SPECK_PX:  # specks: no cell to centre on by the stain
        found = largest_centre(purple_mask(small), SPECK_PX) or dark_centre(small, px_per_um / step if px_per_um else None)
        return ((w / 2, h / 2) if found is None else (found[0] * step + step / 2, found[1] * step + step / 2)), 0
    k, seen = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), 1
    if px_per_um and n > 2:
        cells = stained_cells(mask, labels, stats, centroids, px_per_um / step)
        seen = max(1, len(cells))
        if len(cells) > 1:
            k = min(cells, key=lambda r: (centroids[r][0] * step - w / 2) ** 2 + (centroids[r][1] * step - h / 2) ** 2)
    cx, cy = centroids[k]
    return (float(cx * step + step / 2), float(cy * step + step / 2)), seen


OTHER_CELL_SHARE = 0.25  # a stained cluster with at least this share of the largest one's stain is a cell (a small
# lymphocyte's nucleus beside a monocyte's); smaller ones are granules, platelets, debris
MIN_CELL_UM2 = 12.0  # ... and at least this big (single platelets are smaller; a clump may pass)
LOBE_GAP_UM = 2.0  # stained regions closer than this are one cell (a neutrophil's lobes, an eosinophil's granules)


def stained_cells(mask: np.ndarray, labels: np.ndarray, stats: np.ndarray, centroids: np.ndarray, px_per_um: float) -> list[int]:
    """The stained cells of a stain mask and its connected components (`px_per_um` at the mask's resolution), each
    as the label of its largest region: regions closer than `LOBE_GAP_UM` joined into one cell, kept when its stain
    is at least `MIN_CELL_UM2` and `OTHER_CELL_SHARE` of the largest cell's."""
    k = max(3, int(round(LOBE_GAP_UM * px_per_um)) | 1)
    joined = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    m, clusters = cv2.connectedComponents(joined, connectivity=8)
    owner = np.zeros(len(stats), np.int64)
    ys, xs = np.nonzero(mask)
    owner[labels[ys, xs]] = clusters[ys, xs]  # closing only adds pixels: each region lies in one cluster
    area = np.bincount(owner[1:], weights=stats[1:, cv2.CC_STAT_AREA], minlength=m)
    keep = np.nonzero(area >= max(MIN_CELL_UM2 * px_per_um**2, OTHER_CELL_SHARE * area[1:].max()))[0]
    cells = []
    for c in keep[keep > 0]:
        members = 1 + np.nonzero(owner[1:] == c)[0]
        cells.append(int(members[np.argmax(stats[members, cv2.CC_STAT_AREA])]))
    return cells


GREY_CHROMA = 4.0  # mean |R - G| + |G - B| under which an image holds no colour to speak of
FILL_DARK, FILL_WHITE = 40, 250  # a pixel no brighter than FILL_DARK in any channel (black: fill, or a background too dark
# to read), or at least FILL_WHITE in every one, is fill
MIN_LIT = 8  # sampled pixels (of about 64x64) that are not fill, enough to judge: a platelet alone on black is about 10-20


def colour_strength(rgb: np.ndarray) -> float:
    """Mean |R - G| + |G - B| of the pixels that are not black or white fill (all of them when too few are lit)."""
    small = rgb[:: max(1, rgb.shape[0] // 64), :: max(1, rgb.shape[1] // 64)].astype(np.int16)
    chroma = np.abs(small[..., 0] - small[..., 1]) + np.abs(small[..., 1] - small[..., 2])
    lit = (small.max(axis=2) > FILL_DARK) & (small.min(axis=2) < FILL_WHITE)
    return float(chroma[lit].mean() if lit.sum() >= MIN_LIT else chroma.mean())


def is_greyscale(rgb: np.ndarray) -> bool:
    """No colour anywhere to speak of (a greyscale camera, or a grey export): the stain cannot be seen. Read on the
    pixels that are not black or white fill: a cell cut out onto black (a segmented data set) is 90% black, and read
    over the whole image it passed for grey, so its nucleus was looked for as a dark blob on a black background and
    the cell dropped as "no white cell" (15-17% of such Kaggle and PBC validation cells)."""
    return colour_strength(rgb) < GREY_CHROMA


FAINT_CHROMA = 12.0  # colour strength under which "nothing stained" may be a faded stain, not an image without a cell: the
# sources' images read at least 21.8, red-cells-only windows of BCCD fields 13.4; Kaggle cells under haze and half the
# saturation at most 9.7, 20 of 40 of them answered "no white cell" without a word (scratch, docs/results.md)


GREY_NUCLEUS = 0.6  # of the background: darker than this, a greyscale blob is a nucleus (PBC, Munich)
GREY_CELLS = 0.85  # darker than this, a red cell or a pale nucleus (Kaggle's, in grey, lies at 0.7-0.8 with the red cells)


def largest_stained_um2(rgb: np.ndarray, px_per_um: float, dark: float = GREY_NUCLEUS) -> float:
    """Area (square micrometres) of the largest region stained at all (blue - red > 25). In a greyscale
    image, of the largest solid dark blob instead (a nucleus is the darkest thing in a smear; the thin
    strokes of text vanish under a 1 um opening), read after a 1 um box blur: a platelet is dark only in its
    granules, and unblurred the opening erased it (PBC train platelets and basophils in grey, 450: 56 read as
    nothing stained, so dropped as "no white cell"; blurred 8; stain-free red-cell windows of 100 BCCD train
    fields in grey stay at 0 um2, scripts/grey_platelets.py). `dark`: that blob's level, a share of the background."""
    step = area_step(rgb)
    small = rgb[::step, ::step]
    mask = dark_blobs(small[..., 1], px_per_um / step, dark) if is_greyscale(small) else stain_mask(small, STAINED_THRESHOLD)
    return largest_um2(mask, step, px_per_um)


def area_step(rgb: np.ndarray) -> int:
    """One pixel in how many the area rules read: big fields at about 400 px, plenty for areas."""
    return max(1, round(min(rgb.shape[:2]) / 400))


def largest_um2(mask: np.ndarray, step: int, px_per_um: float) -> float:
    """Area (um2) of the largest connected region of `mask`, a mask of one pixel in `step` of an image of `px_per_um`."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return 0.0 if n <= 1 else float(stats[1:, cv2.CC_STAT_AREA].max() * step * step / px_per_um**2)


def dark_blobs(grey: np.ndarray, px_per_um: float, dark: float = GREY_NUCLEUS) -> np.ndarray:
    """uint8 mask of the solid blobs darker than `dark` of the background (the 90th percentile of the pixels brighter
    than black fill) in a grey image of `px_per_um`, after a 1 um box blur and a 1 um opening (a platelet's granules
    join, text strokes vanish). Over every pixel, a cell cut out onto black read a background of 0 and nothing dark:
    dropped as "no white cell" without a word (validation cells cut out and made grey: Kaggle 9 of 60, PBC 16)."""
    lit = grey[grey > FILL_DARK]
    background = float(np.percentile(lit if lit.size >= MIN_LIT else grey, 90))
    k = max(3, int(px_per_um) | 1)
    mask = (cv2.blur(grey, (k, k)) < dark * background).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def dark_centre(rgb: np.ndarray, px_per_um: float | None) -> tuple[float, float] | None:
    """(x, y) of the largest nucleus-dark blob of `rgb` read in grey (`dark_blobs`) that keeps off the image's edge
    (a rotated copy's fill is dark, black or, under another lab's colours, grey, and always reaches the edge); None
    without one of a nucleus's size (20 px when the scale is unknown)."""
    grey = rgb.mean(2).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(dark_blobs(grey, px_per_um or 3.0), connectivity=8)
    h, w = grey.shape
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    least = SPECK_PX if not px_per_um else max(SPECK_PX, MIN_NUCLEUS_UM2 * px_per_um**2)
    inside = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (area >= least)
    if not inside.any():
        return None
    k = 1 + int(np.argmax(np.where(inside, area, -1)))
    return float(centroids[k][0]), float(centroids[k][1])


def purple_um2(rgb: np.ndarray, px_per_um: float) -> float:
    """Area (um2) of the largest purple region (`purple_mask`), measured as `largest_stained_um2` measures the stain.
    A nucleus the stain rule cannot read (magenta under another lab's stain and light: Kaggle cells in Munich's
    colours, 3 of 120 dropped) still reads purple; red cells do not."""
    step = area_step(rgb)
    return largest_um2(purple_mask(rgb[::step, ::step]), step, px_per_um)


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """RGB of the background: the median of the brightest quarter of pixels (plasma and glass). Found by counting
    the small integer values (the same numbers as np.percentile and np.median, in half the time: every image
    reads it two or three times)."""
    h, w = rgb.shape[:2]
    step = max(1, min(h, w) // 100)
    px = rgb[::step, ::step].reshape(-1, 3)
    lum = px[:, 0].astype(np.int16) + px[:, 1] + px[:, 2]
    cum = np.cumsum(np.bincount(lum, minlength=766))
    at = 0.75 * (lum.size - 1)  # np.percentile's linear rule: between the values at floor(at) and the next
    low = _kth(cum, int(at))
    high = _kth(cum, int(at) + 1) if at > int(at) else low
    bright = px[lum >= high]  # integers: at or above a cut that lies between low and high is at or above high
    m = len(bright)
    out = np.empty(3, np.float32)
    for c in range(3):
        cc = np.cumsum(np.bincount(bright[:, c], minlength=256))
        out[c] = _kth(cc, m // 2) if m % 2 else (np.float32(_kth(cc, m // 2 - 1)) + np.float32(_kth(cc, m // 2))) / np.float32(2)
    return out


def _kth(cum: np.ndarray, k: int) -> int:
    """The k-th smallest (from 0) of values given as the cumulative counts of 0, 1, 2, ..."""
    return int(np.searchsorted(cum, k, side="right"))


def stained_background(rgb: np.ndarray) -> bool:
    """Does the background itself pass for stain? Under a cyan cast it does, and the largest "stained" region
    is the whole smear: the cell's centre came out as the image's middle (159 of 160 Kaggle validation cells
    moved more than 3 um)."""
    bg = background_colour(rgb)
    return bool(bg[2] - bg[0] > STAINED_BACKGROUND)


def stain_readable(rgb: np.ndarray) -> np.ndarray:
    """The image the stain rules can read: with its background made neutral when the background passes for stain."""
    return neutral_background(rgb) if stained_background(rgb) else rgb


DIM_BACKGROUND = 160  # a background whose brightest channel is under this was lit too dimly (home sources: 166-255)
DIM_TARGET = 215  # ... and is raised to this (Kaggle's median 214, BCCD's 206)


def dim_gain(bg: np.ndarray) -> float:
    """How far an image whose background is `bg` is raised, as a camera exposing for its background would have (1: it
    was lit well enough, or too dark to say). Validation cells at a quarter of their light were answered "no white
    cell": every Kaggle one, 73% of PBC's; raised, they are answered as at home (docs/results.md, session 19)."""
    top = float(bg.max())
    return DIM_TARGET / top if bg.min() >= FILL_DARK and top < DIM_BACKGROUND else 1.0


def raised(rgb: np.ndarray) -> np.ndarray:
    """The image with a dim background raised to DIM_TARGET (its colours as they are); unchanged when lit well enough."""
    gain = dim_gain(background_colour(rgb))
    return rgb if gain == 1.0 else _times(rgb, np.full(3, gain, np.float32), False)


def neutral_background(rgb: np.ndarray, in_place: bool = False) -> np.ndarray:
    """The image with its background made neutral: each channel scaled (gain 1 to 1.8) so the median of the
    brightest quarter of pixels is grey-white (von Kries white balance on the background), and raised when lit
    too dimly (`dim_gain`). Unchanged when the background is already neutral and bright enough (gains under 4%)
    or too dark to say. `in_place`: written over `rgb` (a caller done with the original, such as a whole slide
    after detection), so no second copy is held."""
    bg = background_colour(rgb)
    if bg.min() < FILL_DARK:  # a black background: too dark to say
        return rgb
    gain = np.clip(bg.max() / bg, 1.0, 1.8) * dim_gain(bg)
    if (gain < 1.04).all():
        return rgb
    return _times(rgb, gain.astype(np.float32), in_place)


def _times(rgb: np.ndarray, gain: np.ndarray, in_place: bool) -> np.ndarray:
    lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * gain, 0, 255).astype(np.uint8)
    # one table a channel: the same bytes as scaling in float32, without a float copy of the image (1.2 GB for a
    # 100-megapixel scan, whose whole background a `white_balance_image` model balances)
    src = np.ascontiguousarray(rgb)
    return cv2.LUT(src, lut.reshape(256, 1, 3), dst=src if in_place else None)


REINHARD_TARGET = (175.0, 140.0, 122.0, 55.0, 14.0, 18.0)  # OpenCV L*a*b* means and spreads a view is moved to:
# about the mean of Kaggle, PBC and Munich views (their spreads: L 48-65, a 11-21, b 16-23); any fixed target works,
# since training and inference both map onto it
REINHARD_MIN_STD = (10.0, 4.0, 4.0)  # a grey or flat view's spread is not blown up into colour noise


def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(the image in OpenCV L*a*b*, its channels' means and spreads (6 numbers), the mask of black fill or None) over
    the pixels that are not black fill (no brighter than FILL_DARK in any channel). Kaggle's rotated copies hold 12.5%
    black corners, which tripled Kaggle's average L spread (66.6 for 21.4 without them): moved onto such a target,
    another source's cells came out at 1.7x their contrast and darker, not in Kaggle's colours."""
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
    fill = rgb.max(axis=2) <= FILL_DARK
    fill = fill if fill.any() and fill.mean() < 1 - MIN_LIT_SHARE else None
    mask = None if fill is None else (~fill).astype(np.uint8)
    mean, std = (v.ravel() for v in cv2.meanStdDev(lab, mask=mask))
    return lab, np.r_[mean, std], fill


MIN_LIT_SHARE = 0.05  # under this share of pixels not black, the statistics are read over all of them


COLOUR_BANDS = (0.1, 0.3, 0.6)  # lightness quantiles of a view's lit pixels: its darkest tenth (nucleus), the next fifth
# (cytoplasm, granules), the next three tenths (red cells): where each lies in L*a*b* is the stain and light of its lab


def view_colours(rgb: np.ndarray) -> np.ndarray:
    """15 numbers of where a view sits in L*a*b* (OpenCV's 0..255 scale), black fill left out (`lab_stats`): its
    channels' means and spreads, and the mean colour of each lightness band of COLOUR_BANDS. A run's stain and light
    against the training sources' (wbc.models.colours), which the features' distance does not see: another lab's
    cells keep their shapes, and the network answers them as surely as it answers its own. The bands are read from
    per-lightness sums (a pixel's band is its lightness's), of every other pixel each way: a 192-pixel view in about 0.25 ms."""
    lab, stats, fill = lab_stats(rgb[::2, ::2])
    lit = (lab if fill is None else lab[~fill]).reshape(-1, 3)
    light = lit[:, 0]
    count = np.bincount(light, minlength=256)
    sums = np.stack([np.arange(256) * count, *(np.bincount(light, weights=lit[:, c], minlength=256) for c in (1, 2))], 1)
    edges = np.searchsorted(np.cumsum(count), np.float64(COLOUR_BANDS) * len(light)) + 1
    bands = []
    for lo, hi in zip((0, *edges[:-1]), edges):
        n = count[lo:hi].sum()
        bands.append(sums[lo:hi].sum(0) / n if n else np.zeros(3))
    return np.r_[stats, *bands].astype(np.float64)


def reinhard(rgb: np.ndarray, target: tuple[float, ...] = REINHARD_TARGET) -> np.ndarray:
    """The image with each L*a*b* channel's mean and spread moved to `target` (Reinhard et al. 2001): another
    lab's stain and light mapped onto one colour world before the model, when the model was trained that way.
    Read and moved without the black fill (`lab_stats`), which is no part of the smear and stays black."""
    lab, stats, fill = lab_stats(rgb)
    mean, std = stats[:3], stats[3:]
    gain = np.float64(target[3:]) / np.maximum(std, REINHARD_MIN_STD)
    affine = np.hstack([np.diag(gain), (np.float64(target[:3]) - mean * gain)[:, None]])  # per channel, one pass
    out = cv2.cvtColor(cv2.transform(lab, affine), cv2.COLOR_LAB2RGB)
    if fill is not None:
        out[fill] = rgb[fill]
    return out


def stained_extent_px(rgb: np.ndarray) -> float:
    """Largest side (pixels) of the bounding box of the largest stained region (0 when nothing is stained):
    with NUCLEUS_EXTENT_UM, the scale of an image that holds no red cells to measure."""
    m = cv2.morphologyEx(stain_mask(rgb).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return 0.0
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return float(max(stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT]))


PALE_CHROMA = 0.27  # stain colour (see stain_colour) under which an image's stain is too pale to read: validation cells of
# the three sources lie at 0.28 and above at their 0.5th percentile (PBC's lilac platelets, exempt, aside), BCCD's fields
# at 0.287 and above; under haze or half the saturation at 0.15-0.30,
# where Kaggle's answers the other flags let through were 84.6% and 91.3% right (docs/results.md, session 19)


def stain_colour(rgb: np.ndarray) -> float | None:
    """How blue the stain is against the light: the 90th percentile of blue minus red over the stained pixels, over
    the background's mean level. None when too little is stained to say (the no-white-cell rule's business)."""
    small = np.ascontiguousarray(rgb[::2, ::2])
    d = small[..., 2].astype(np.int16) - small[..., 0]
    stained = d[d > STAINED_THRESHOLD]
    if stained.size < 20:
        return None
    return float(np.percentile(stained, 90)) / max(float(background_colour(rgb).mean()), 1.0)


def too_pale(colour: float | None, overexposed: bool) -> bool:
    """The stain reads under PALE_CHROMA, and no clipped background explains it (overexposure washes the stain out,
    and its own reason says so)."""
    return colour is not None and colour < PALE_CHROMA and not overexposed


WASHED_OUT_BACKGROUND = 250  # a background this bright in every channel is clipped white: the camera overexposed


DARK_LIGHT = 80  # the background's brightest channel under which the light is too low to tell "no stain" from "no light"
# (the sources' smears read 180-250; a lamp at a quarter of its light about 57, still read; a cut-out's black surround 0-10)


def too_dark(rgb: np.ndarray) -> bool:
    """Is the light too low (or the surround black) for the absence of stain to mean the absence of a cell? Validation
    cells made very dark (a third of the light and gamma 1.6 or contrast 1.5) and cells cut out onto black under a
    yellow cast were answered "no white cell" without a word (scratch, docs/results.md)."""
    return float(background_colour(rgb).max()) < DARK_LIGHT


def washed_out(rgb: np.ndarray) -> bool:
    """Is the background clipped white? Then a pale stain may be an overexposed one (Kaggle cells at 1.4x exposure:
    the largest stained region 86-135 um2 -> under 1, so real cells were answered "no white cell"). Every image is asked
    now, so a cheap test first: a channel's background median can only reach 250 where an eighth of the pixels
    `background_colour` reads (the brightest quarter's upper half) do, on the same grid (0.27 -> 0.01 ms an image)."""
    h, w = rgb.shape[:2]
    step = max(1, min(h, w) // 100)
    px = rgb[::step, ::step]
    if any(np.count_nonzero(px[..., c] >= WASHED_OUT_BACKGROUND) * 8 < px.shape[0] * px.shape[1] - 8 for c in range(3)):
        return False
    return bool(background_colour(rgb).min() >= WASHED_OUT_BACKGROUND)


def tinted_share(rgb: np.ndarray) -> float:
    """Share of pixels with a channel 10 or more apart from another: a smear's cells, even washed out; a blank or a
    printed page has none."""
    small = rgb[:: max(1, rgb.shape[0] // 120), :: max(1, rgb.shape[1] // 120)].astype(np.int16)
    return float(((small.max(2) - small.min(2)) >= 10).mean())


_DARKER = np.round(255 * (np.arange(256) / 255.0) ** 2).astype(np.uint8)


def darkened(rgb: np.ndarray) -> np.ndarray:
    """The image with gamma 2 (white stays white, mid-tones darken): an overexposed cell's stain reads again."""
    return _DARKER[rgb]


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(rgb: np.ndarray) -> float:
    """The image's noise, in grey levels of the green channel (Immerkaer 1996: the mean absolute response to a kernel
    blind to flat and linear structure). At most 1.6 on the train images of Kaggle, PBC, Munich and BCCD; camera noise
    of sigma s reads as about s. A large image is read in its central 512-pixel square (sampling it sparser would
    count the cells' edges as noise)."""
    h, w = rgb.shape[:2]
    y0, x0 = max(0, (h - 512) // 2), max(0, (w - 512) // 2)
    g = np.ascontiguousarray(rgb[y0 : y0 + 512, x0 : x0 + 512, 1], dtype=np.float32)
    if min(g.shape) < 3:
        return 0.0
    r = np.abs(cv2.filter2D(g, -1, _NOISE_KERNEL)[1:-1, 1:-1])
    return float(np.sqrt(np.pi / 2) * r.mean() / 6)
