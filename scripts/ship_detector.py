"""Copy a finished detector run into the package as the default detector of `wbc count`, with its test figures.

    python scripts/ship_detector.py runs/detector [--bccd DIR]

Measures the BCCD test list once with the learned detector and once with the classic one (the
baseline row), on ONNX Runtime like `wbc count`; the detector was selected on val only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wbc._util.io import atomic_write_text
from wbc.count.detect import ClassicDetector
from wbc.count.detector import (
    Detector,
    load_detector,
    load_detector_file,
    save_detector,
    shipped_detector_path,
)
from wbc.count.evaluate import evaluate_count
from wbc.data.locate import resolve_bccd, resolve_data
from wbc.infer.predictor import fastest, load_model

KEEP = ("detector", "images", "seconds_per_image", "detection", "map50", "map50_95", "wbc_class")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--bccd", default=None)
    ap.add_argument("--out", type=Path, default=Path("reports/detector"))
    a = ap.parse_args()
    bccd = resolve_bccd(a.bccd)
    blood = Path(resolve_data(None))
    labels, simple = blood / "dataset-master" / "labels.csv", blood / "dataset2-master" / "images" / "TEST_SIMPLE"
    predictor = fastest(load_model())
    src = a.run / "detector.safetensors"
    figures = {}
    for name, det in (("learned", load_detector(src)), ("classic", ClassicDetector())):
        r = evaluate_count(predictor, bccd, "test", labels if labels.is_file() else None, simple, detector=det)
        figures[name] = {k: r[k] for k in KEEP if k in r}
        print(name, json.dumps({k: round(v["ap50"], 3) for k, v in r["detection"].items()}), f"mAP@0.5 {r['map50']:.3f}",
              f"{1 / r['seconds_per_image']:.1f} fields/s", flush=True)
    model, meta = load_detector_file(src)
    info = meta["info"]
    info["metrics"]["test"] = figures
    dest = shipped_detector_path()
    save_detector(model, dest, info)
    Detector(dest)  # it loads
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "figures.json", json.dumps(figures, indent=2))
    print(f"shipped {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
