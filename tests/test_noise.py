"""A noisy camera: the noise is measured, and the answers on images grainier than the model reads well are flagged."""

import numpy as np
from conftest import BCCD, pbc_images

import wbc
from wbc.image.decode import decode
from wbc.image.stain import noise_sigma
from wbc.infer.predictor import MAX_NOISE


def _noisy(rgb, sigma, seed=0):
    return np.clip(rgb.astype(np.float32) + np.random.default_rng(seed).normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def test_the_noise_is_measured_as_added():
    rgb = decode(pbc_images("test", "MONOCYTE", 1)[0])
    assert noise_sigma(rgb) < 1.0  # the source's own: at most 1.6 on any source's train images (scripts/noise.py)
    for sigma in (2.0, 4.0, 8.0):
        assert abs(noise_sigma(_noisy(rgb, sigma)) / sigma - 1) < 0.15
    field = decode(BCCD / "JPEGImages" / "BloodImage_00017.jpg")  # a field: read in its central square
    assert noise_sigma(field) < 1.0 and abs(noise_sigma(_noisy(field, 6.0)) / 6.0 - 1) < 0.15


def test_grainy_cells_are_flagged_and_clean_ones_are_not(wbc_cache):
    model = wbc.load_model()
    cells = [decode(f) for c in ("NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL") for f in pbc_images("test", c, 2)]
    for sigma, grainy in ((0, False), (2, False), (6, True)):
        answers = model.predict([_noisy(im, sigma) for im in cells] if sigma else cells)
        said = ["noisy image" in (a.review_reason or "") for a in answers]
        assert (all(said) and all(a.review for a in answers)) if grainy else not any(said), (sigma, [a.review_reason for a in answers])
    assert 2 < MAX_NOISE < 6
