"""A camera out of focus, and files saved at low JPEG quality: validation cells so degraded, read as a user's images.

    python scripts/blur_jpeg.py [--out reports/blur_jpeg.json]

Validation cells (240 Kaggle, 240 PBC, 120 Munich; the shipped split manifests, never a test split) blurred by a
Gaussian of sigma 0.2 to 1.2 um (in each image's own pixels: the source's median red-cell scale), or re-saved as JPEG
at quality 50 to 10 (passed as the file's bytes, as a user's file is read). Per level: accuracy, the share left
unflagged and how many of those are right, without the compressed-JPEG reason and with it (as shipped; blur has no
reason of its own: does some flag catch what it costs?).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from low_resolution import validation_sets, with_and_without

import wbc
from wbc._util.io import atomic_write_text
from wbc.image.decode import decode

BLUR_UM = (0.0, 0.2, 0.4, 0.6, 0.8, 1.2)
QUALITY = (50, 30, 20, 10)
PX_PER_UM = {"kaggle": 6.81, "pbc": 11.04, "munich": 13.9}  # the sources' median red-cell scales (wbc data scale)


def jpeg(rgb: np.ndarray, q: int) -> bytes:
    """The file a user would send: read as bytes, its quality is known (`wbc.image.decode.jpeg_quality`)."""
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/blur_jpeg.json"))
    a = ap.parse_args()
    sets = validation_sets()
    model, table = wbc.load_model(), {}
    for name, cells in sets.items():
        images, truth = [decode(p) for p, _ in cells], [c for _, c in cells]
        for um in BLUR_UM:
            blurred = [cv2.GaussianBlur(im, (0, 0), um * PX_PER_UM[name]) if um else im for im in images]
            row = table.setdefault(name, {})[f"blur_{um}um"] = with_and_without(model.predict(blurred), truth, "-")
            print(f"{name:7s} blur {um} um: {row}", flush=True)
        for q in QUALITY:
            row = table[name][f"jpeg_{q}"] = with_and_without(model.predict([jpeg(im, q) for im in images]), truth, "heavily compressed JPEG")
            print(f"{name:7s} jpeg {q}: {row}", flush=True)
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
