"""Grouping finds augmented copies of one source cell from the pixels alone."""

import cv2
import numpy as np
from conftest import kaggle_images

from wbc.data.groups import cluster, group_images, image_features, inliers


def augment(img: np.ndarray, angle: float, flip: int | None, shift=(0, 0), shear=0.0) -> np.ndarray:
    """A Keras-ImageDataGenerator-like copy: rotation, shear, shift and flip, black fill."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[0, 1] += shear
    m[:, 2] += shift
    out = cv2.warpAffine(img, m, (w, h), borderValue=(0, 0, 0))
    return cv2.flip(out, flip) if flip is not None else out


def test_copies_group_together_and_unrelated_apart():
    originals = [cv2.imread(str(p)) for p in kaggle_images("TEST_SIMPLE", "NEUTROPHIL")[:6]]
    feats, truth = [], []
    for k, img in enumerate(originals):
        for angle, flip, shift, shear in ((0, None, (0, 0), 0), (17, 1, (20, -10), 0.1), (-12, 0, (-25, 15), 0), (8, -1, (10, 20), 0.15)):
            feats.append(image_features(augment(img, angle, flip, shift, shear)))
            truth.append(k)
    ids = cluster(feats)
    for k in range(len(originals)):  # each source is exactly one group, and no group holds two sources
        assert len({ids[i] for i in range(len(ids)) if truth[i] == k}) == 1
    assert len(set(ids)) == len(originals)
    # the geometric check separates cleanly
    assert inliers(feats[1], feats[0]) >= 40
    assert inliers(feats[4], feats[0]) <= 10


def test_real_kaggle_copies_match_their_original():
    """TEST MONOCYTE is 620 copies of the 4 TEST_SIMPLE originals: a sample must form 4 groups, one original each."""
    simple = kaggle_images("TEST_SIMPLE", "MONOCYTE")
    copies = kaggle_images("TEST", "MONOCYTE")[::10]
    paths = simple + copies
    groups = group_images(paths, ["MONOCYTE"] * len(paths))
    assert len(set(groups)) == 4
    assert len({groups[i] for i in range(len(simple))}) == 4
