"""How far the scale taken from a cell's own size lies from its source's red-cell scale, per source and class.

    python scripts/scale_without_rbcs.py [DATA]   # DATA: the folder holding blood-cells/, pbc/, munich-aml/

Train folders only (Munich every 2nd image, PBC every 4th, Kaggle TRAIN every 20th), framed as the shipped model
frames them: the images whose red cells are measured give the source's median; those without (scale `cell`) are
compared with it. The Munich blasts without red cells came out at 1.38x (docs/results.md), which is why a run's
images without red cells take the run's scale (wbc.image.framing.RunScale).
"""

import collections
import glob
import sys

import numpy as np

from wbc.image.decode import decode
from wbc.image.framing import source_image, stain_reading
from wbc.infer.predictor import load_model

data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
p = load_model()
sources = {"munich": ("munich-aml/train/*/*", 2), "pbc": ("pbc/train/*/*.jpg", 4), "kaggle": ("blood-cells/dataset2-master/images/TRAIN/*/*.jpeg", 20)}
for name, (pattern, step) in sources.items():
    files = sorted(glob.glob(f"{data}/{pattern}"))[::step]
    measured, other = [], collections.defaultdict(list)
    for f in files:
        _, px, how, _ = stain_reading(source_image(decode(f), p.spec), None)
        (measured.append(px) if how == "measured" else other[(how, f.split("/")[-2])].append(px))
    median = np.median(measured)
    print(f"{name}: {len(files)} images, {len(measured)} measured, median {median:.2f} px/um")
    for key, values in sorted(other.items()):
        r = np.array(values) / median
        print(f"    {key}: {len(values)}, ratio to the median {np.median(r):.2f}, more than 25% off {np.mean(np.abs(r - 1) > 0.25):.2f}")
    print(f"    measured: more than 25% off the median {np.mean(np.abs(np.array(measured) / median - 1) > 0.25):.2f}")
