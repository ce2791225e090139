"""No real cell dropped under the shifts other labs' images show (issue 17): colour casts, a red-purple
nucleus, a grey background, greyscale and crops where the cell fills the frame. Real cells from three
sources, the shipped model, the rules every entry point shares (Predictor.frame + no_white_cell)."""

import cv2
import numpy as np
import pytest
import torch
from conftest import DATA, KAGGLE, pbc_images

import wbc
from wbc.data.shifts import SHIFTS, shifted
from wbc.image.decode import decode
from wbc.image.scale import MAX_STAINED_EXTENT_UM, estimate_scale
from wbc.image.stain import neutral_background, stained_extent_px
from wbc.infer.predictor import NO_WHITE_CELL


def _cells() -> list[np.ndarray]:
    files = [*sorted((KAGGLE / "TEST" / "MONOCYTE").glob("*.jpeg"))[::150], *sorted((KAGGLE / "TEST" / "LYMPHOCYTE").glob("*.jpeg"))[::150],
             *pbc_images("test", "NEUTROPHIL")[::25], *pbc_images("test", "EOSINOPHIL")[::25],
             *sorted((DATA / "munich-aml" / "test" / "BLAST").glob("*.jpg"))[::25]]
    assert len(files) >= 15
    return [decode(f) for f in files]


@pytest.fixture(scope="module")
def model():
    return wbc.load_model()


@pytest.fixture(scope="module")
def cells():
    return _cells()


@pytest.mark.parametrize("how", SHIFTS)
def test_real_cells_are_never_answered_no_white_cell(model, cells, how):
    images = [shifted(c, how) for c in cells]
    dropped = [p.note for p in model.predict(images) if p.label == NO_WHITE_CELL]
    assert dropped == []


def test_a_cyan_cast_still_lets_the_red_cells_give_the_scale(model, cells):
    for c in cells[:4]:  # Kaggle: red cells all around
        plain, cast = model.frame(c), model.frame(shifted(c, "cyan"))
        assert plain.scale == cast.scale == "measured"
        assert abs(cast.px_per_um / plain.px_per_um - 1) < 0.15


def test_a_cell_filling_the_frame_takes_its_scale_from_the_cell_not_the_width(model, cells):
    """A tight crop has no red cells: the scale comes from the stained cell and lands near the measured one,
    where the image-width assumption was off by a factor of two or more."""
    ratios, width_ratios = [], []
    for c in cells:
        measured = model.frame(c)
        crop = shifted(c, "tight_crop")
        f = model.frame(crop)
        if measured.scale != "measured" or f.scale == "measured":
            continue
        assert f.scale == "cell"
        ratios.append(f.px_per_um / measured.px_per_um)
        width_ratios.append(crop.shape[1] / 40.0 / measured.px_per_um)
    assert len(ratios) >= 5
    assert 0.7 < np.median(ratios) < 1.4
    assert np.median(np.abs(np.log(ratios))) < np.median(np.abs(np.log(width_ratios)))


def test_fragments_that_would_make_the_cell_implausibly_wide_do_not_give_the_scale(model):
    """A tight crop of a PBC basophil (PBC's scale 11.0 px/um): the crop's fragments and granules pass as three "red
    cells" of 1.6 px/um, at which the stained cell would be over 90 um wide. That estimate is dropped and the scale
    taken from the stained cell instead, and the answer says so."""
    crop = shifted(decode(DATA / "pbc" / "train" / "BASOPHIL" / "BA_210917.jpg"), "tight_crop")
    seen = neutral_background(crop)  # what the shipped model reads (white_balance_image)
    fragments = estimate_scale(seen)
    assert fragments.found and stained_extent_px(seen) / fragments.px_per_um > MAX_STAINED_EXTENT_UM
    f = model.frame(crop)
    assert f.scale == "cell"
    assert 0.6 < f.px_per_um / 11.04 < 1.6
    p = model.predict(crop)[0]
    assert p.review and "scale not measured (no usable red cells): from the stained cell" in p.review_reason


def test_a_folder_of_analyser_crops_takes_no_run_scale_from_their_fragments(model):
    """Another lab's analyser crops: PBC cells cut tight, shrunk to 120x120, with a yellow cast. Fewer than half of them
    show anything the circle search takes for red cells, and those are fragments at about half the true scale; a run
    scale from them framed every cell of the folder too small (45.6% right on 90 such crops). The folder gets no run
    scale: each crop is framed on its own, from its stained cell where its "red cells" are not believable."""
    from wbc.image.framing import run_scale

    files = [f for cls in ("BASOPHIL", "EOSINOPHIL", "IG", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL") for f in pbc_images("train", cls)[::60][:7]]
    crops = [shifted(cv2.resize(shifted(decode(f), "tight_crop"), (120, 120), interpolation=cv2.INTER_AREA), "yellow") for f in files]
    assert len(crops) >= 40
    assert run_scale(crops) is None
    true = 11.04 * 120 / np.array([shifted(decode(f), "tight_crop").shape[1] for f in files])
    framed = [model.frame(c) for c in crops]
    ratio = np.array([f.px_per_um for f in framed]) / true
    assert 0.75 < np.median(ratio) < 1.33


def test_neutral_background_leaves_a_neutral_image_alone_and_undoes_a_cast():
    rng = np.random.default_rng(0)
    img = np.full((120, 160, 3), 225, np.uint8)
    img[40:80, 60:100] = (120, 60, 170)  # a purple nucleus
    img = np.clip(img.astype(int) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    assert neutral_background(img) is img
    yellow = shifted(img, "yellow")
    back = neutral_background(yellow).astype(int)
    assert np.abs(back[5, 5] - back[5, 5].mean()).max() < 6  # background grey again
    assert back[60, 80, 2] - back[60, 80, 0] > 30  # the nucleus blue minus red again


def test_every_flagged_cell_says_why(model, cells):
    """review_reason: low confidence, or a view sized without red cells (Python, and the CSV/JSON/HTTP rows built from it)."""
    preds = model.predict([shifted(c, "tight_crop") for c in cells] + cells)
    for p in preds:
        assert p.review == bool(p.review_reason) and p.to_dict()["review_reason"] == p.review_reason
        assert ("scale not measured" in (p.review_reason or "")) == (p.scale in ("cell", "assumed"))
        assert ("low confidence" in (p.review_reason or "")) == (p.probability < model.spec.review_threshold)
    assert any(p.scale == "cell" for p in preds) and any("low confidence" in (p.review_reason or "") for p in preds)


@pytest.mark.parametrize("step", ["white_balance", "stain_norm"])
@pytest.mark.parametrize("how", ["yellow", "cyan", "red_purple_nucleus"])
def test_a_colour_normalised_model_sees_a_cast_cell_nearly_as_at_home(model, cells, how, step):
    """With `white_balance` (background made neutral) or `stain_norm` (Reinhard to one L*a*b* world) in the spec
    every view is recoloured before the model (training did the same after its colour augmentation): a cell under
    another lab's cast reaches the network much closer to the same cell at home than without it."""
    from dataclasses import replace

    from wbc.image.framing import frame
    from wbc.image.stain import cell_centre

    plain = replace(model.spec, white_balance=False, white_balance_image=False, stain_norm=False)
    on_spec = replace(plain, **{step: True})
    gap = {False: [], True: []}
    for rgb in cells:
        px, centre = model.frame(rgb).px_per_um, cell_centre(rgb)  # one scale and centre for both: only colour differs
        for on in (False, True):
            spec = on_spec if on else plain
            home = frame(rgb, spec, px, centre).pixels.float()
            away = frame(shifted(rgb, how), spec, px, centre).pixels.float()
            gap[on].append(float((home - away).abs().mean()))
    assert np.median(gap[True]) < 0.6 * np.median(gap[False]), {k: np.median(v) for k, v in gap.items()}


def test_stain_normalisation_maps_any_view_onto_one_colour_world_and_keeps_a_grey_one_calm():
    """Reinhard: the L*a*b* means of the output are the target's and one view under two casts comes out nearly
    the same; a flat or greyscale view is not blown up into colour noise (the spreads have a floor)."""
    import cv2

    from wbc.image.stain import REINHARD_TARGET, reinhard

    rng = np.random.default_rng(0)
    img = np.full((96, 96, 3), (230, 200, 150), np.uint8)  # a yellow background
    img[30:60, 30:60] = (150, 60, 120)  # a purple nucleus
    img = np.clip(img.astype(int) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
    lab = cv2.cvtColor(reinhard(img), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
    assert np.allclose(lab.mean(0), REINHARD_TARGET[:3], atol=4), lab.mean(0)
    cyan = shifted(img, "cyan")
    assert np.abs(cyan.astype(int) - img).mean() > 15
    assert np.abs(reinhard(cyan).astype(int) - reinhard(img)).mean() < 4
    grey = np.repeat(img.mean(2, keepdims=True).astype(np.uint8), 3, axis=2)
    out = cv2.cvtColor(reinhard(grey), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
    assert out[:, 1:].std(0).max() < 3  # no colour made up from grey


def test_under_a_cyan_cast_the_view_stays_on_the_cell(cells):
    """The stain rules read blue minus red against a neutral light: under a cyan cast all of a Kaggle smear
    passes for stain and the raw rule's centre leaves the cell. The background itself passing for stain sends
    the rules to the balanced image (wbc.image.stain.stain_readable), for every model, not only those that
    balance the whole image (white_balance_image)."""
    from wbc.image.framing import stain_reading
    from wbc.image.stain import cell_centre

    px = 6.9  # Kaggle's scale
    for c in cells[:4]:  # Kaggle TEST cells
        plain = np.array(cell_centre(stain_reading(c, px)[0]))
        cast = shifted(c, "cyan")
        assert np.linalg.norm(np.array(cell_centre(cast)) - plain) / px > 3  # the raw rule is fooled
        assert np.linalg.norm(np.array(cell_centre(stain_reading(cast, px)[0])) - plain) / px < 1.5


def test_a_cyan_cast_view_is_close_to_the_plain_one_with_either_balance(model, cells):
    """What the network sees under the cast, against the plain cell: the view's own balance or the whole
    image's bring it within half the gap of no balance at all."""
    from dataclasses import replace

    from wbc.image.framing import frame

    gaps = {}
    view_only = replace(model.spec, white_balance=True, white_balance_image=False)
    for name, spec in (("none", replace(view_only, white_balance=False)), ("view", view_only), ("image", replace(view_only, white_balance_image=True))):
        views = [(frame(shifted(c, "cyan"), spec, 6.9).pixels, frame(c, spec, 6.9).pixels) for c in cells[:4]]  # Kaggle TEST cells
        gaps[name] = np.mean([(a.float() - b.float()).abs().mean().item() for a, b in views])
    assert max(gaps["view"], gaps["image"]) < 0.5 * gaps["none"], gaps


def test_the_background_augmentation_retones_the_plasma_and_leaves_the_stained_cell(cells):
    """Training's new background tone (--background): the brightest pixels change, the nucleus does not."""
    import random

    from wbc.data.transforms import new_background
    from wbc.image.stain import stain_mask

    for k, c in enumerate(cells[:4]):  # Kaggle TEST cells
        out = new_background(c, random.Random(k)).astype(np.float32)
        lum = c.astype(np.float32).mean(2)
        bright, nucleus = lum > np.percentile(lum, 90), stain_mask(c, 40)
        assert nucleus.sum() > 100
        assert np.abs(out - c)[nucleus].mean() < 1.0
        assert np.abs(out - c)[bright].mean() > 3.0


def test_the_lab_transfer_augmentation_moves_the_whole_image_into_a_lab_within_the_sources_span(cells):
    """Training's --transfer: the image's L*a*b* mean and spread (without black fill) land on a target inside LAB_SPAN
    (the sources' own averages, a little wider), a different lab each draw, the picture itself unchanged."""
    import random

    from wbc.data.transforms import LAB_SPAN, lab_transfer
    from wbc.image.stain import lab_stats

    for k, c in enumerate(cells[:4]):
        outs = [lab_transfer(c, random.Random(10 * k + j)) for j in range(2)]
        for out in outs:
            for value, (lo, hi) in zip(lab_stats(out)[1], LAB_SPAN):
                assert lo - 4 <= value <= hi + 4, (value, lo, hi)  # uint8 rounding and clipping at 0 and 255
            lum_in, lum_out = c.astype(np.float32).mean(2).ravel(), out.astype(np.float32).mean(2).ravel()
            assert np.corrcoef(lum_in, lum_out)[0, 1] > 0.9  # the same picture, in other colours
        assert np.abs(outs[0].astype(int) - outs[1]).mean() > 2


def test_another_labs_colours_are_read_and_given_without_the_black_fill_of_a_rotated_copy():
    """Kaggle's rotated copies hold black corners. Read with them, a copy's L*a*b* spread was three times the
    smear's, so a move into another lab's colours (Reinhard: the `to_SOURCE` shifts, training's --transfer) left
    its cells at a third of the target's contrast and turned the corners grey; and Kaggle's own average, the target
    of "Kaggle's colours", made every other source's cells darker and 1.7x as contrasted. Now the fill is neither
    read nor moved: the smear's spread lands on the target and the corners stay black."""
    from wbc.image.stain import FILL_DARK, lab_stats, reinhard

    pbc = (203.1, 138.8, 135.5, 40.0, 9.0, 14.2)  # PBC's average (scripts/tone_curves.py source_colours)
    rotated = [p for p in sorted((KAGGLE / "TRAIN" / "NEUTROPHIL").glob("*.jpeg"))[:80]
               if (decode(p).max(axis=2) <= FILL_DARK).mean() > 0.1][:3]
    assert len(rotated) == 3
    for p in rotated:
        rgb = decode(p)
        fill = rgb.max(axis=2) <= FILL_DARK
        _, own, _ = lab_stats(rgb)
        assert own[3] < 35  # the smear's L spread, not the corners' (Kaggle's average: 21 without them, 67 with)
        out = reinhard(rgb, pbc)
        assert np.array_equal(out[fill], rgb[fill])  # the fill stays black
        _, moved, _ = lab_stats(out)
        assert np.allclose(moved, pbc, atol=3), (p.name, moved.round(1))


def test_for_a_whole_image_balance_the_background_tone_is_drawn_before_the_balance(cells):
    """A model that balances the whole image (--white-balance-image) meets another lab's glass through the balance:
    training draws the new tone first, so the balance reads it and the cell comes out in colours the home balance
    never gives, as under the grey-background shift at inference; the view is not re-toned a second time."""
    import random

    from wbc.data.augment import Augment
    from wbc.data.transforms import balanced_image
    from wbc.image.stain import stain_mask

    moved = []
    for k, c in enumerate(cells):
        home, nucleus = neutral_background(c).astype(np.float32), stain_mask(c, 40)
        plain, rest = balanced_image(c, Augment(background=0.0), random.Random(k))
        assert np.array_equal(plain, neutral_background(c)) and rest.background == 0.0
        out, rest = balanced_image(c, Augment(background=1.0), random.Random(k))
        assert rest.background == 0.0  # the view keeps the tone it got
        moved.append(np.abs(out.astype(np.float32) - home)[nucleus].mean())
    assert max(moved) > 2.0, moved  # drawn after the balance, every nucleus would keep its home colours (0)


def test_the_tight_crop_augmentation_keeps_the_cell_and_blacks_out_the_rest(model, cells):
    """Training's analyser crop (--tight-crop): the view's middle is untouched, its edges black, as `frame` pads
    a real tight crop (wbc.data.shifts "tight_crop")."""
    import random

    from wbc.data.transforms import tight_crop

    x = model.frame(cells[0]).pixels
    side = x.shape[-1]
    for k in range(20):
        out = tight_crop(x, random.Random(k))
        mid = slice(round(side * 0.35), round(side * 0.65))  # inside every drawn square (45% wide, 6% off centre)
        assert torch.equal(out[:, mid, mid], x[:, mid, mid])
        assert out[:, :, :2].max() == 0 and out[:, :2, :].max() == 0 and out[:, :, -2:].max() == 0
        kept = (out.sum(0) > 0).float().mean().item()
        assert 0.15 < kept < 0.75
    real = model.frame(shifted(cells[0], "tight_crop"), px_per_um=6.9).pixels  # Kaggle's scale
    assert 0.2 < (real.sum(0) == 0).float().mean().item() < 0.85  # a real tight crop at its scale: black all round
