"""The red-cell ruler: pixels a micrometre measured on real images of three sources, against
values measured by hand (zoomed crops with a pixel ruler) and against BCCD's annotated boxes."""

import numpy as np
from conftest import BCCD, KAGGLE, PBC_CLASSES, pbc_images
from PIL import Image

from wbc.count.voc import read_boxes, read_ids
from wbc.image.decode import decode
from wbc.image.framing import frame
from wbc.image.scale import estimate_scale, source_scale
from wbc.models.classifier import ModelSpec

KAGGLE_BY_HAND = 6.5  # a red cell 49 px across in TEST_SIMPLE/NEUTROPHIL/_0_1966.jpeg (7.5 um)
PBC_BY_HAND = 10.9  # a red cell 82 px across in test/LYMPHOCYTE/LY_105283.jpg


def _within(values, truth, tol):
    v = np.array([x for x in values if x])
    return float(np.mean(np.abs(v / truth - 1) < tol)), len(v)


def test_kaggle_crops_within_20_percent_of_the_hand_measurement():
    files = sorted((KAGGLE / "TEST_SIMPLE").glob("*/*.jpeg"))[::2]
    share, n = _within([estimate_scale(decode(f)).px_per_um for f in files], KAGGLE_BY_HAND, 0.20)
    assert n >= 0.95 * len(files) and share >= 0.9


def test_pbc_crops_within_15_percent_of_the_hand_measurement():
    files = [f for c in PBC_CLASSES for f in pbc_images("test", c)[::16]]
    share, n = _within([estimate_scale(decode(f)).px_per_um for f in files], PBC_BY_HAND, 0.15)
    assert n >= 0.95 * len(files) and share >= 0.8


def test_bccd_fields_match_their_annotated_red_cells():
    ratios = []
    for i in read_ids(BCCD, "val")[:30]:
        boxes = [b for b in read_boxes(BCCD / "Annotations" / f"{i}.xml") if b.kind == "RBC"]
        if len(boxes) >= 3:
            truth = np.median([((b.x1 - b.x0) + (b.y1 - b.y0)) / 2 for b in boxes]) / 7.5
            ratios.append(estimate_scale(decode(BCCD / "JPEGImages" / f"{i}.jpg")).px_per_um / truth)
    assert np.mean(np.abs(np.array(ratios) - 1) < 0.15) >= 0.8


def test_the_estimate_follows_a_resize_and_sources_differ():
    rgb = decode(pbc_images("test", "NEUTROPHIL")[0])
    full = estimate_scale(rgb).px_per_um
    half = estimate_scale(np.asarray(Image.fromarray(rgb).resize((180, 182)))).px_per_um
    assert abs(half / full - 0.5) < 0.08
    kaggle = source_scale(sorted((KAGGLE / "TEST").glob("*/*.jpeg")), sample=20)["px_per_um"]
    pbc = source_scale([f for c in PBC_CLASSES for f in pbc_images("test", c, 3)], sample=20)["px_per_um"]
    assert 1.4 < pbc / kaggle < 1.9  # CellaVision crops are about 1.6x Kaggle's magnification


def test_no_red_cells_means_the_scale_is_assumed_and_said_so():
    blank = np.full((240, 320, 3), 200, np.uint8)
    assert not estimate_scale(blank).found
    f = frame(blank, ModelSpec(field_um=24.0, input_size=(64, 64)))
    assert f.scale == "assumed" and f.stained_um2 == 0.0
    g = frame(blank, ModelSpec(field_um=24.0, input_size=(64, 64)), px_per_um=7.0)
    assert g.scale == "given" and g.px_per_um == 7.0


def test_counted_background_colour_equals_numpys_percentile_and_median():
    """background_colour counts integer values instead of sorting; it must give numpy's numbers exactly."""
    from wbc.image.stain import background_colour

    files = sorted((KAGGLE / "TEST").glob("*/*.jpeg"))[::150] + pbc_images("test", "EOSINOPHIL", 6)
    assert len(files) >= 20
    for f in files:
        im = decode(f)
        for x in (im, np.ascontiguousarray(im[::-1, :, ::-1]), im[:41, :67]):  # odd sizes: both median rules
            h, w = x.shape[:2]
            step = max(1, min(h, w) // 100)
            px = x[::step, ::step].reshape(-1, 3).astype(np.float32)
            lum = px.sum(1)
            expected = np.median(px[lum >= np.percentile(lum, 75)], 0)
            assert np.array_equal(background_colour(x), expected), f
