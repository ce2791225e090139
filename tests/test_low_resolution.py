"""Images too coarse to show a nucleus's lobes or a granule: every answer flagged, with the reason; finer ones not."""

import cv2
from conftest import BCCD, pbc_images

import wbc
from wbc.count.count import count_field
from wbc.count.detector import default_detector
from wbc.image.decode import decode
from wbc.infer.predictor import MIN_PX_PER_UM

PBC_PX = 11.0  # about (wbc data scale)


def _coarser(rgb, f):
    return cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def test_coarse_cells_are_flagged_and_finer_ones_are_not(wbc_cache):
    model = wbc.load_model()
    cells = [decode(f) for c in ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL") for f in pbc_images("test", c, 2)]
    for px, coarse in ((2.5, True), (4.0, False), (None, False)):
        answers = model.predict(cells if px is None else [_coarser(im, px / PBC_PX) for im in cells])
        low = ["low resolution" in (a.review_reason or "") for a in answers]
        assert (all(low) and all(a.review for a in answers)) if coarse else not any(low), (px, [a.review_reason for a in answers])


def test_a_coarse_fields_white_cells_are_flagged(wbc_cache):
    model, detector = wbc.load_model(), default_detector(None)
    path = BCCD / "JPEGImages" / "BloodImage_00017.jpg"
    fine = count_field(model, path, detector=detector)
    coarse = count_field(model, _coarser(decode(path), 0.2), detector=detector)
    assert coarse.px_per_um < MIN_PX_PER_UM <= fine.px_per_um
    assert fine.wbc and not any("low resolution" in (w["review_reason"] or "") for w in fine.wbc)
    assert coarse.wbc and all(w["review"] and "low resolution" in w["review_reason"] for w in coarse.wbc)
    given = count_field(model, path, px_per_um=2.5, detector=detector)  # a scale given by the user counts too
    assert given.wbc and all("low resolution" in w["review_reason"] for w in given.wbc)
