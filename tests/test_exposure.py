"""An overexposed camera (background clipped white, the stain washed out): real cells are still read, and a cell the
stain rules cannot find any more is flagged as such, never dropped in silence."""

import numpy as np
from conftest import CLASSES, kaggle_images

import wbc
from wbc.image.decode import decode
from wbc.infer.predictor import NO_WHITE_CELL, OVEREXPOSED


def _exposed(path, gain):
    return np.clip(decode(path).astype(np.float32) * gain, 0, 255).astype(np.uint8)


def test_overexposed_cells_are_read_and_a_lost_one_is_flagged(wbc_cache):
    model = wbc.load_model()
    paths = [p for c in CLASSES for p in kaggle_images("TEST_SIMPLE", c)]
    bright = model.predict([_exposed(p, 1.4) for p in paths])  # read as they are, these lost their stain to "no white cell"
    assert sum(a.label == NO_WHITE_CELL for a in bright) <= 2, [a.review_reason for a in bright if a.label == NO_WHITE_CELL]
    washed = model.predict([_exposed(p, 1.6) for p in paths])
    lost = [a for a in washed if a.label == NO_WHITE_CELL]
    assert lost and all(a.review and a.review_reason == OVEREXPOSED for a in lost)
    blank = model.predict([np.full((240, 320, 3), 255, np.uint8)])[0]  # white and nothing else: no cell, nothing to look at
    assert blank.label == NO_WHITE_CELL and not blank.review
