"""A file saved at low JPEG quality: its block artefacts hide chromatin and granules (Kaggle validation cells re-saved at
quality 10: the answers no other flag caught were 86.7% right; scripts/blur_jpeg.py). The quality is read from the
file's quantisation table, and an answer on a file under 40 says so, in Python and in a folder run."""

import csv
import io

import cv2
import numpy as np
from conftest import CLASSES, kaggle_images, run_cli
from PIL import Image

import wbc
from wbc.image.decode import decode, jpeg_quality


def _saved(rgb: np.ndarray, q: int) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()


def test_the_quality_a_jpeg_was_saved_at_is_read_from_its_table():
    path = kaggle_images("TEST_SIMPLE", "MONOCYTE", 1)[0]
    rgb = decode(path)
    assert jpeg_quality(path.read_bytes()) == 75  # Kaggle's own files
    assert [jpeg_quality(_saved(rgb, q)) for q in (95, 75, 50, 30, 20)] == [95, 75, 50, 30, 20]
    assert jpeg_quality(_saved(rgb, 5)) < 20
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    assert jpeg_quality(png.getvalue()) is None and jpeg_quality(b"\xff\xd8 not really") is None


def test_answers_on_a_heavily_compressed_file_say_so(tmp_path, wbc_cache):
    paths = [p for c in CLASSES for p in kaggle_images("TEST_SIMPLE", c, 2)]
    for p in paths:
        (tmp_path / f"{p.parent.name}_{p.name}").write_bytes(_saved(decode(p), 15))
    model = wbc.load_model()
    low = model.predict(sorted(tmp_path.iterdir()))
    assert all(a.review and "heavily compressed JPEG (quality 1" in a.review_reason for a in low), [a.review_reason for a in low]
    assert not any("compressed" in (a.review_reason or "") for a in model.predict(paths))
    out = tmp_path / "run.csv"
    run_cli("predict", str(tmp_path), "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(paths) and all("heavily compressed JPEG" in r["review_reason"] for r in rows)
