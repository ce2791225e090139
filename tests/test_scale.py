"""The red-cell ruler: pixels a micrometre measured on real images of three sources, against
values measured by hand (zoomed crops with a pixel ruler) and against BCCD's annotated boxes."""

from pathlib import Path

import cv2
import numpy as np
from conftest import BCCD, DATA, KAGGLE, PBC_CLASSES, pbc_images
from PIL import Image

from wbc.count.voc import read_boxes, read_ids
from wbc.image.decode import decode
from wbc.image.framing import SMEAR_SCALES, frame
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


def test_many_big_circles_are_measured_in_one_go():
    """A greyscale PBC monocyte: nothing stained is painted out, so twenty big circles reach the edge profile (64,000
    sample points, past what one row of cv2.remap takes); measured, not an error."""
    from wbc.data.shifts import shifted
    from wbc.image.scale import _circles, _outermost

    grey = shifted(decode(DATA / "pbc" / "test" / "MONOCYTE" / "MO_326040.jpg"), "greyscale")
    assert len(_outermost(_circles(grey)[0])) >= 15
    s = estimate_scale(grey)
    assert s.found and 8 < s.px_per_um < 14  # PBC: about 11 px/um


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


def test_a_cell_without_red_cells_takes_the_runs_scale_not_its_own_size(tmp_path):
    """Munich blasts whose red cells cannot be measured: sized from the nucleus they came out far too many pixels a
    micrometre (the blast shrunk to a lymphocyte's size); in a run they take the median of the run's other images."""
    import csv

    from conftest import run_cli

    from wbc.image.framing import RunScale, run_scale
    from wbc.infer.predictor import load_model

    spec = load_model().spec
    blasts = sorted((DATA / "munich-aml" / "train" / "BLAST").glob("*.jpg"))[:60]
    run = run_scale(blasts)
    assert run is not None and 12 < run.px_per_um < 16  # Munich: 14.1 px/um (median of 272 train images)
    own = {f: frame(decode(f), spec) for f in blasts}
    lonely = [f for f in blasts if own[f].scale == "cell"]
    assert lonely, "no Munich blast without measurable red cells among the first 60"
    for f in lonely:
        framed = frame(decode(f), spec, run)
        assert framed.scale == "run" and framed.px_per_um == run.px_per_um
    assert np.median([own[f].px_per_um for f in lonely]) > 1.15 * run.px_per_um
    measured = [f for f in blasts if own[f].scale == "measured"]  # measured red cells: the run's, unless strong and far
    again = {f: frame(decode(f), spec, run) for f in measured[:8]}
    assert all(a.scale == "corrected" and a.px_per_um == run.px_per_um or a.scale == "measured" for a in again.values())
    assert sum(a.scale == "corrected" for a in again.values()) >= 6
    crops = tmp_path / "crops"  # tight crops (the cell filling the frame): no run scale, each image sizes its own cell
    crops.mkdir()
    for i, f in enumerate(sorted((KAGGLE / "TEST").glob("*/*.jpeg"))[:12]):
        Image.open(f).crop((110, 70, 210, 170)).save(crops / f"{i}.png")
    assert run_scale(sorted(crops.glob("*.png"))) is None
    assert RunScale(14.0) == RunScale(14.0)  # a value: pickled to decoder processes and Ray workers
    # through the CLI: the CSV says which scale each image took and why a run-scaled cell is flagged
    folder = tmp_path / "run"
    folder.mkdir()
    for f in [*lonely[:2], *[f for f in blasts if own[f].scale == "measured"][:14]]:
        (folder / f.name).write_bytes(f.read_bytes())
    run_cli("predict", str(folder), "--out", str(tmp_path / "out.csv"))
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(tmp_path / "out.csv"))}
    for f in lonely[:2]:
        assert rows[f.name]["scale"] == "run" and "the run's median" in rows[f.name]["review_reason"], rows[f.name]
    measured_rows = [r for r in rows.values() if r["scale"] in SMEAR_SCALES]
    assert len(measured_rows) == 14 and not any("scale" in r["review_reason"] for r in measured_rows)  # not flagged for it
    # from Python, as from the command line
    from wbc import classify

    by_name = {Path(o.path).name: o.prediction for o in classify(str(folder))}
    assert all(by_name[f.name].scale == "run" for f in lonely[:2])


def test_a_pooled_folder_keeps_each_microscopes_scale_and_only_a_strong_far_estimate_keeps_its_own(tmp_path):
    """The run's scale is kept per image size: in a folder pooling Munich (400x400, ~14 px/um) and Kaggle (320x240,
    ~6.8) crops, a Munich cell without red cells takes Munich's scale, not the pool's median. And an image whose red
    cells were measured takes the run's ("corrected") unless its own estimate rests on at least 7 red cells and lies
    more than 25% off it (a field at another magnification)."""
    from wbc.image.framing import (
        FAR_OFF,
        STRONG_RBCS,
        RunScale,
        run_scale,
        source_image,
    )
    from wbc.infer.predictor import load_model

    spec = load_model().spec
    munich = sorted((DATA / "munich-aml" / "train" / "BLAST").glob("*.jpg"))[:60]
    kaggle = sorted((KAGGLE / "TRAIN").glob("*/*.jpeg"))[::400][:30]
    pooled = run_scale([*munich, *kaggle])
    scales = dict(pooled.sizes)
    assert set(scales) == {(400, 400), (240, 320)} and not pooled.one_microscope
    assert 12 < scales[(400, 400)] < 16 and 5.5 < scales[(240, 320)] < 8
    assert pooled.for_shape((400, 400, 3)) == scales[(400, 400)] and pooled.for_shape((100, 100, 3)) is None
    own = {f: frame(decode(f), spec) for f in munich}
    lonely = next(f for f in munich if own[f].scale == "cell")
    framed = frame(decode(lonely), spec, pooled)
    assert framed.scale == "run" and framed.px_per_um == scales[(400, 400)]
    # one microscope, crops of a few sizes (PBC: 360x363, 360x360, 366x369): a size with few images takes the run's
    assert RunScale(11.0, (((360, 363), 11.0),), one_microscope=True).for_shape((360, 360, 3)) == 11.0
    # one microscope, every crop its own size (cut around each cell): the sizes together give the run's scale
    varied = tmp_path / "varied"
    varied.mkdir()
    for i, f in enumerate(munich):
        Image.open(f).crop((i % 7, i % 5, 400 - i % 11, 400 - i // 2)).save(varied / f"{i}.png")
    for_all = run_scale(sorted(varied.glob("*.png")))
    assert not for_all.sizes and 12 < for_all.other < 16
    assert for_all.for_shape((333, 377, 3)) == for_all.other
    # weak (far or near), or strong and near -> the run's; strong and far -> its own
    run = RunScale(scales[(400, 400)])
    estimates = {f: estimate_scale(source_image(decode(f), spec)) for f in munich if own[f].scale == "measured"}
    off = {f: max(e.px_per_um / run.px_per_um, run.px_per_um / e.px_per_um) for f, e in estimates.items()}
    weak_far = [f for f, e in estimates.items() if e.rbcs < STRONG_RBCS and off[f] > FAR_OFF * 1.02]
    weak_near = [f for f, e in estimates.items() if e.rbcs < STRONG_RBCS and off[f] < FAR_OFF / 1.02]
    strong_near = [f for f, e in estimates.items() if e.rbcs >= STRONG_RBCS and off[f] < FAR_OFF / 1.02]
    assert weak_far and weak_near and strong_near, (len(weak_far), len(weak_near), len(strong_near))
    for f in [*weak_far[:2], *weak_near[:2], *strong_near[:2]]:
        framed = frame(decode(f), spec, run)
        assert framed.scale == "corrected" and framed.px_per_um == run.px_per_um, f
    strong = strong_near[0]
    far_run = RunScale(estimates[strong].px_per_um * 1.6)  # a strong estimate far from its run's stands
    kept = frame(decode(strong), spec, far_run)
    assert kept.scale == "measured" and (kept.pixels == own[strong].pixels).all()


def _edge_radii_one_at_a_time(g, circles, rays=32):
    """The edge step's definition, one circle at a time (wbc.image.scale._edge_radii does all circles at once)."""
    h, w = g.shape
    th = np.linspace(0, 2 * np.pi, rays, endpoint=False)
    out = []
    for x, y, r in circles:
        rs = np.arange(max(2.0, 0.6 * r), 1.6 * r, 0.5, dtype=np.float32)
        xs, ys = x + np.outer(np.cos(th), rs), y + np.outer(np.sin(th), rs)
        inside = ((xs >= 0) & (xs < w - 1) & (ys >= 0) & (ys < h - 1)).all(1)
        if inside.sum() < rays // 2:
            out.append(None)
            continue
        xi, yi = xs[inside].astype(np.float32), ys[inside].astype(np.float32)
        profile = cv2.remap(g, xi, yi, cv2.INTER_LINEAR)
        out.append(float(rs[int(np.argmax(np.gradient(np.median(profile, 0))))]))
    return out


def test_all_circles_at_once_measure_what_one_at_a_time_does():
    """Red cells of four sources, in colour and in grey, cut by the image edge or not: the same radii to the bit."""
    from wbc.data.shifts import shifted
    from wbc.image.scale import _circles, _edge_radii, _outermost

    files = sorted((KAGGLE / "TEST").glob("*/*.jpeg"))[::400] + [f for c in PBC_CLASSES for f in pbc_images("test", c)[:2]]
    files += sorted((DATA / "munich-aml" / "test" / "BLAST").glob("*"))[:4] + [BCCD / "JPEGImages" / f"{i}.jpg" for i in read_ids(BCCD, "val")[:4]]
    measured = 0
    for f in files:
        for rgb in (decode(f), shifted(decode(f), "greyscale")):
            c, _, green = _circles(rgb)
            g = cv2.GaussianBlur(green, (0, 0), 0.7).astype(np.float32)
            circles = _outermost(c)
            assert _edge_radii(g, circles) == _edge_radii_one_at_a_time(g, circles)
            measured += len(circles)
    assert len(files) >= 28 and measured >= 300
