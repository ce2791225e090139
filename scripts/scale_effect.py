"""How the physical scale changes accuracy: one model, one test set, three ways of knowing the scale.

    python scripts/scale_effect.py --model runs/kaggle/model.safetensors --data ../shared/data/pbc --split TEST --source-px 11.04

Rows: the scale measured per image from its red cells (the default), the source's median scale
given for every image (what `wbc adapt` or `--px-per-um` does), and the scale a Kaggle-frame
model would assume (the image taken to be as wide as a Kaggle crop: 320 px at 6.81 px/um, i.e.
no physical scale at all). Accuracy restricted to the classes the set and the model share.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from wbc.evaluation.evaluate import match_classes
from wbc.image.decode import decode
from wbc.image.framing import KAGGLE_PX_PER_UM, KAGGLE_WIDTH
from wbc.infer.predictor import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="TEST")
    ap.add_argument("--source-px", type=float, required=True, help="the source's median px/um (wbc data scale)")
    a = ap.parse_args()
    p = load_model(a.model)
    lab = match_classes(a.data, a.split, p.classes, ignore_unknown=True)
    in_set = sorted(set(int(k) for k in lab.y))
    width = decode(lab.paths[0]).shape[1]
    rows = {"measured per image": None, f"source median ({a.source_px:.2f} px/um)": a.source_px,
            f"as a Kaggle frame ({KAGGLE_PX_PER_UM * width / KAGGLE_WIDTH:.2f} px/um)": KAGGLE_PX_PER_UM * width / KAGGLE_WIDTH}
    out = {}
    for name, px in rows.items():
        probs = p.predict_proba(lab.paths, px_per_um=px).numpy()
        pred = np.array(in_set)[probs[:, in_set].argmax(1)]
        out[name] = float((pred == lab.y).mean())
        print(f"{name}: {out[name]:.4f} on {len(lab.y)} images", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
