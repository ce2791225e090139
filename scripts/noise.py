"""A noisy camera (high gain, little light): validation cells with Gaussian noise added, and the sources' own noise.

    python scripts/noise.py [--out reports/noise.json]

The noise of 200 train images of each source as they are (`wbc.image.stain.noise_sigma`), then validation cells (240
Kaggle, 240 PBC, 120 Munich; the shipped split manifests, never a test split) with noise of sigma 2 to 8 grey levels
added, read as a user's images: accuracy, the unflagged share and how many of those are right, without the
noisy-image reason and with it (`wbc.infer.predictor.MAX_NOISE`, chosen here: the lowest sigma at which the unflagged
answers fall to 97% right on a source).
"""

from __future__ import annotations

import argparse
import glob
import json
import random
from pathlib import Path

import numpy as np
from low_resolution import validation_sets, with_and_without

import wbc
from wbc._util.io import atomic_write_text
from wbc.data.locate import resolve_data
from wbc.image.decode import decode
from wbc.image.stain import noise_sigma

SIGMAS = (0, 2, 3, 4, 6, 8)
TRAIN = {"kaggle": "blood-cells/dataset2-master/images/TRAIN/*/*.jpeg", "pbc": "pbc/train/*/*.jpg", "munich": "munich-aml/train/*/*",
         "bccd": "bccd/JPEGImages/*.jpg"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/noise.json"))
    a = ap.parse_args()
    data = Path(resolve_data(None)).parent
    table = {"own_noise": {}}
    for name, pattern in TRAIN.items():
        files = sorted(glob.glob(str(data / pattern)))
        random.Random(0).shuffle(files)
        v = np.array([noise_sigma(decode(f)) for f in files[:200]])
        table["own_noise"][name] = {"p50": round(float(np.median(v)), 2), "p99": round(float(np.percentile(v, 99)), 2), "max": round(float(v.max()), 2)}
        print(f"{name:7s} own noise {table['own_noise'][name]}", flush=True)
    sets = validation_sets()
    model = wbc.load_model()
    for name, cells in sets.items():
        images, truth = [decode(p) for p, _ in cells], [c for _, c in cells]
        for sigma in SIGMAS:
            rng = np.random.default_rng(0)
            noisy = [np.clip(im.astype(np.float32) + rng.normal(0, sigma, im.shape), 0, 255).astype(np.uint8) for im in images]
            row = table.setdefault(name, {})[str(sigma)] = with_and_without(model.predict(noisy), truth, "noisy image")
            print(f"{name:7s} sigma {sigma}: {row}", flush=True)
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
