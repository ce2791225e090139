"""A greyscale camera or a grey export: the stain's colours are what tell an eosinophil's granules from a neutrophil's,
so every answer on a grey image says why it needs a look (validation cells made grey: Kaggle 50% right, the few no
other flag caught 86% right; scripts/greyscale.py), and a "no white cell" answer on one is flagged (Kaggle TEST_SIMPLE
in grey: 65 of 71 were dropped in silence). Colour images are never called grey."""

import numpy as np
from conftest import CLASSES, PBC_CLASSES, kaggle_images, pbc_images

import wbc
from wbc.image.decode import decode
from wbc.infer.predictor import GREY_SPECK, GREYSCALE, NO_WHITE_CELL


def test_every_answer_on_a_grey_image_says_so_and_colour_ones_do_not(wbc_cache):
    model = wbc.load_model()
    paths = [p for c in CLASSES for p in kaggle_images("TEST_SIMPLE", c, 3)] + [p for c in PBC_CLASSES for p in pbc_images("test", c, 2)]
    grey = model.predict([np.repeat(decode(p).mean(2, keepdims=True), 3, 2).round().astype(np.uint8) for p in paths])
    cells = [a for a in grey if a.label != NO_WHITE_CELL]
    assert len(cells) >= 10 and all(a.review and GREYSCALE in a.review_reason for a in cells), [a.review_reason for a in cells]
    assert all(a.cells_seen is None for a in cells)  # the stain cannot be seen, so its cells are not counted (was 0)
    # Kaggle's nuclei in grey are no darker than its red cells: "no white cell", but never in silence
    assert all(a.review and a.review_reason == GREY_SPECK for a in grey if a.label == NO_WHITE_CELL)
    colour = model.predict(paths)
    assert not any(GREYSCALE in (a.review_reason or "") for a in colour) and sum(not a.review for a in colour) >= 5


def test_a_folder_run_of_grey_images_is_told_once_what_to_change(tmp_path, wbc_cache):
    from conftest import run_cli
    from PIL import Image

    from wbc.infer.answers import fault_warning, reason_kinds

    for p in kaggle_images("TEST_SIMPLE", "LYMPHOCYTE", 4):
        Image.fromarray(np.repeat(decode(p).mean(2, keepdims=True), 3, 2).round().astype(np.uint8)).save(tmp_path / f"{p.stem}.png")
    said = " ".join(run_cli("predict", str(tmp_path)).stderr.split())
    assert "warning: greyscale image on 4 of 4 images: save the camera's colour images" in said, said
    colour = " ".join(run_cli("predict", *map(str, kaggle_images("TEST_SIMPLE", "LYMPHOCYTE", 4))).stderr.split())
    assert "images: " not in colour
    assert reason_kinds("low confidence (0.91 < 0.94); overexposed (the background is clipped white): x") == ["low confidence", "overexposed"]
    assert fault_warning({"noisy image": 2}, 2) is None and fault_warning({"noisy image": 3}, 7) is None


def test_a_cell_cut_out_onto_black_is_read_in_colour_and_answered(wbc_cache):
    """Read over the whole image, 90% black fill passed for grey, and the cell was dropped as "no white cell"
    (validation cells cut out so: 18 of 120 Kaggle, 20 of 120 PBC)."""
    from wbc.data.shifts import cut_out
    from wbc.image.stain import is_greyscale

    paths = [p for c in CLASSES for p in kaggle_images("TEST_SIMPLE", c, 3)] + [p for c in PBC_CLASSES for p in pbc_images("test", c, 2)]
    cut = [cut_out(decode(p)) for p in paths]
    assert all((c == 0).all(2).mean() > 0.6 for c in cut)  # mostly black, as cut-outs are
    assert not any(is_greyscale(c) for c in cut)
    answers = wbc.load_model().predict(cut)
    assert all(a.label != NO_WHITE_CELL and GREYSCALE not in (a.review_reason or "") for a in answers), [(a.source, a.note) for a in answers]
    grey = [np.repeat(c.mean(2, keepdims=True), 3, 2).round().astype(np.uint8) for c in cut]
    assert all(is_greyscale(g) for g in grey)
    # and in grey: the background is read on the lit pixels, not the black (over all of them it was 0, nothing was dark,
    # and the cell was dropped as "no white cell" without a flag)
    silent = [a.source for a in wbc.load_model().predict(grey) if a.label == NO_WHITE_CELL and not a.review]
    assert not silent, silent
