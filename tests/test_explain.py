"""Grad-CAM points at the cell: most of the heat-map's mass lies on the stained cell, on real images."""

import cv2
import numpy as np
import pytest
from conftest import CLASSES, kaggle_images

import wbc
from wbc.image.stain import stain_mask
from wbc.infer.explain import Explainer, overlay


def cell_region(pixels) -> np.ndarray:
    """The largest stained component of the framed input, grown to take in the cytoplasm around the nucleus."""
    rgb = pixels.permute(1, 2, 0).numpy()
    n, lab, stats, _ = cv2.connectedComponentsWithStats(stain_mask(rgb).astype(np.uint8))
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    grow = max(3, rgb.shape[1] // 5) | 1  # ~the cytoplasm's width around a nucleus
    return cv2.dilate((lab == k).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow))) > 0


@pytest.fixture(scope="module")
def model():
    return wbc.load_model()


def test_heatmap_mass_lies_on_the_cell(model):
    ex = Explainer(model.model)
    inside, area, peak_on_cell = [], [], []
    for c in CLASSES:
        for path in kaggle_images("TEST_SIMPLE", c)[:3]:
            x = model.input_tensor(path)
            heat = ex.heatmap(x)
            assert heat.shape == tuple(model.spec.input_size) and 0 <= heat.min() and heat.max() <= 1
            region = cell_region(x)
            inside.append(heat[region].sum() / max(heat.sum(), 1e-9))
            peak_on_cell.append(bool(region.flat[int(np.argmax(heat))]))
            area.append(region.mean())
    inside, area = np.array(inside), np.array(area)
    # The cell region is about a quarter of the framed input; Grad-CAM's 5x5 map (160 px input), blown up,
    # is coarse, so about half its mass lands on that quarter: twice chance, not all of it. Measured with the
    # shipped model on all 71 TEST_SIMPLE cells: median inside 0.57, 2.2x chance, hottest point on the cell
    # for 89% (PBC test, 35 cells: 0.57, 2.5x, 89%); these 12 cells give 10/12.
    assert np.median(inside) >= 0.4 and np.median(inside / area) >= 1.5, (inside.round(2), area.round(2))
    assert np.mean(peak_on_cell) >= 0.75, peak_on_cell  # the hottest point is on the cell (chance: ~0.25)


def test_overlay_is_an_image_of_the_input_size(model):
    x = model.input_tensor(kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0])
    img = overlay(x, Explainer(model.model).heatmap(x, class_index=2))
    assert img.shape == (*model.spec.input_size, 3) and img.dtype == np.uint8
