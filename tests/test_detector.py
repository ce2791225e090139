"""The learned cell detector: training makes the loss fall, the shipped detector finds the labelled WBCs,
tiling is shift-consistent, ONNX Runtime agrees with PyTorch, and a 100-megapixel field stays under 2 GB."""

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import BCCD, run_cli

from wbc.count.centernet import DETECT_PX_PER_UM
from wbc.count.detector import Detector, cached_detector_onnx, shipped_detector_path
from wbc.count.voc import iou, match, read_boxes, read_ids
from wbc.image.decode import decode

shipped = pytest.mark.skipif(not shipped_detector_path().is_file(), reason="no shipped detector in this checkout")
VAL = read_ids(BCCD, "val")


def work_scale(i: str) -> np.ndarray:
    rgb = decode(BCCD / "JPEGImages" / f"{i}.jpg")
    f = DETECT_PX_PER_UM / 14.0
    return cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)


def test_a_few_iterations_of_training_lower_the_loss(tmp_path, wbc_cache):
    out = tmp_path / "det"
    run_cli("train-detector", "--data", str(BCCD), "--out", str(out), "--epochs", "6", "--max-images", "6", "--crop", "128",
            "--batch-size", "6", "--lr", "2e-3")
    losses = [float(r["loss"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0], losses
    meta = json.loads((out / "summary.json").read_text())
    assert meta["trained_on"]["fields"] == 6 and "map50" in meta["metrics"]["val"]
    assert (out / "detector.safetensors").is_file() and (out / "last.pt").is_file()


@shipped
def test_the_shipped_detector_finds_every_labelled_wbc():
    det = Detector(shipped_detector_path())
    for i in VAL[:12]:
        truth = [b for b in read_boxes(BCCD / "Annotations" / f"{i}.xml") if b.kind == "WBC"]
        found = [b for b in det.counted(det.boxes(work_scale(i))) if b.kind == "WBC"]
        f = DETECT_PX_PER_UM / 14.0
        scaled = [type(b)(b.kind, b.x0 * f, b.y0 * f, b.x1 * f, b.y1 * f) for b in truth]
        assert sum(match(found, scaled, 0.3)) == len(scaled), (i, len(found), len(scaled))


@shipped
def test_tiling_gives_the_same_boxes_shifted():
    det = Detector(shipped_detector_path())
    field = work_scale(VAL[3])
    h, w = field.shape[:2]
    canvas = np.zeros((1400, 1700, 3), np.uint8)
    canvas[:] = np.median(field.reshape(-1, 3), axis=0).astype(np.uint8)  # the slide's background colour
    ox, oy = 690, 560  # across the tile seams (tiles of 768 with 160 overlap start every 608 px)
    canvas[oy : oy + h, ox : ox + w] = field
    tiled = det.counted(det.boxes(canvas))
    whole = det.counted(det.tile_boxes(canvas))  # the same pixels in one pass: tiling may only move borderline cells
    assert abs(len(tiled) - len(whole)) <= 1
    assert all(any(t.kind == u.kind and iou(t, u) > 0.8 for t in tiled) for u in whole if u.score >= 0.6)
    # the field's confident cells come back where it was pasted (context at its edges moves borderline scores)
    sure = [b for b in det.counted(det.boxes(field)) if b.score >= 0.6]
    shifted = [type(b)(b.kind, b.x0 + ox, b.y0 + oy, b.x1 + ox, b.y1 + oy, b.score) for b in sure]
    assert shifted and all(any(t.kind == s.kind and iou(t, s) > 0.7 for t in tiled) for s in shifted)


@shipped
def test_onnx_runtime_and_pytorch_agree(wbc_cache):
    torch_det = Detector(shipped_detector_path())
    onnx_det = Detector(cached_detector_onnx(shipped_detector_path()))
    for i in VAL[:4]:
        field = work_scale(i)
        for a, b in zip(torch_det.heads(np.pad(field, ((0, -field.shape[0] % 32), (0, -field.shape[1] % 32), (0, 0)))),
                        onnx_det.heads(np.pad(field, ((0, -field.shape[0] % 32), (0, -field.shape[1] % 32), (0, 0))))):
            assert np.abs(a - b).max() < 1e-3
        ta, tb = torch_det.counted(torch_det.boxes(field)), onnx_det.counted(onnx_det.boxes(field))
        assert len(ta) == len(tb) and all(iou(x, y) > 0.98 for x, y in zip(ta, tb))


PEAK = """
import atexit, sys
from wbc.cli import main
atexit.register(lambda: print("PEAK_KB", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")), file=sys.stderr))
sys.argv = ["wbc", *sys.argv[1:]]
main()
"""


@shipped
def test_a_100_megapixel_field_is_counted_under_2_gb(tmp_path, wbc_cache):
    tile = decode(BCCD / "JPEGImages" / f"{VAL[0]}.jpg")
    big = np.tile(tile, (21, 16, 1))  # 10080 x 10240 = 103 Mpx
    path = tmp_path / "slide.jpg"
    ok, data = cv2.imencode(".jpg", big[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    path.write_bytes(data.tobytes())
    del big, data
    run_cli("count", str(BCCD / "JPEGImages" / f"{VAL[0]}.jpg"))  # the ONNX exports, once, outside the measured run
    p = subprocess.run([sys.executable, "-c", PEAK, "count", str(path), "--format", "json"], capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr
    peak_mb = int(p.stderr.split("PEAK_KB")[1].split()[0]) / 1024
    assert peak_mb < 2048, peak_mb
    r = json.loads(p.stdout)
    field_wbcs = sum(b.kind == "WBC" for b in read_boxes(BCCD / "Annotations" / f"{VAL[0]}.xml"))
    assert r["images"][0]["width"] == 10240 and abs(r["totals"]["WBC"] - 336 * field_wbcs) <= 0.1 * 336 * max(1, field_wbcs)
