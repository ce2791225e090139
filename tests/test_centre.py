"""Which cell a single-cell image is about: the stained cell nearest its middle, not the largest stain in it."""

import numpy as np
import pytest
from conftest import PBC, pbc_images

import wbc
from wbc.image.decode import decode
from wbc.image.framing import source_image, stain_reading
from wbc.image.stain import cell_centre

# PBC train images with a second white cell near a corner, bigger in stain than the cell the image was cut around
NEIGHBOURED = {"EOSINOPHIL/EO_521034.jpg": "EOSINOPHIL",  # a lymphocyte in the top-left corner (answered LYMPHOCYTE, unflagged, before)
               "PLATELET/PLATELET_765422.jpg": "PLATELET",  # a neutrophil in the top-right corner (answered NEUTROPHIL before)
               "IG/MMY_408761.jpg": "IG"}  # another myelocyte at the left edge (answered MONOCYTE before)


@pytest.fixture(scope="module")
def shipped_model():
    return wbc.load_model()


def _off_middle_um(model, path) -> tuple[float, float]:
    """How far (um) from the image's middle the view is centred: by the largest stain, and as framed now."""
    rgb = decode(path)
    read, px, _, _ = stain_reading(source_image(rgb, model.spec), None)
    h, w = rgb.shape[:2]
    return tuple(float(np.hypot(x - w / 2, y - h / 2) / px) for x, y in (cell_centre(read), cell_centre(read, px)))


def test_a_bigger_neighbour_in_a_corner_is_not_the_cell_classified(shipped_model):
    for name, truth in NEIGHBOURED.items():
        largest, framed = _off_middle_um(shipped_model, PBC / "train" / name)
        assert largest > 10 and framed < 4, name  # the old rule centred on the neighbour, 14-18 um away
        assert shipped_model.predict(PBC / "train" / name)[0].label == truth, name


def test_an_image_of_one_cell_is_centred_as_before(shipped_model):
    """Where the image holds one cell (lobes and granules are one cell), the centre is the largest stained region's."""
    for cls in ("NEUTROPHIL", "EOSINOPHIL", "BASOPHIL", "MONOCYTE", "LYMPHOCYTE", "IG"):
        for path in pbc_images("test", cls)[:8]:
            rgb = decode(path)
            read, px, _, _ = stain_reading(source_image(rgb, shipped_model.spec), None)
            assert cell_centre(read, px) == cell_centre(read), path.name


def test_an_image_of_several_white_cells_says_so(shipped_model, tmp_path):
    """A whole smear field given to `predict` is answered for one cell, the one nearest its middle: the answer's
    cells_seen, the csv's column, the table and the run's closing note say the others are there, and point to `wbc
    count` (BCCD train fields with two WBC boxes; one-cell images count one)."""
    import csv

    from conftest import BCCD, run_cli

    fields = [BCCD / "JPEGImages" / f"BloodImage_{i:05d}.jpg" for i in (10, 34, 43)]  # train list, two WBC boxes each
    single = pbc_images("test", "NEUTROPHIL", 2)
    answers = shipped_model.predict([*fields, *single, PBC / "train" / "EOSINOPHIL/EO_521034.jpg"])
    assert [a.cells_seen for a in answers] == [2, 2, 2, 1, 1, 2]  # the last: a PBC eosinophil with a lymphocyte in a corner
    assert answers[0].to_dict()["cells_seen"] == 2
    out = tmp_path / "answers.csv"
    r = run_cli("predict", *map(str, [*fields, *single]), "--out", str(out))
    said = r.stdout + r.stderr
    assert "note: 3 of 5 images show more than one white cell; each is answered for the cell nearest its middle" in said
    assert "`wbc count` classifies every cell of a field" in said
    table = run_cli("predict", str(fields[0])).stderr  # the table says it by the answer
    assert "2 white cells: the middle" in table and "one's answer" in table
    with open(out) as f:
        assert [row["cells_seen"] for row in csv.DictReader(f)] == ["2", "2", "2", "1", "1"]
