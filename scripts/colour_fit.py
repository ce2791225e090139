"""Give a trained model file its colour statistics (what `wbc train` now does at its end): a Gaussian of each
source's training views' colours, the limit at COLOUR_QUANTILE of their distances, the share of validation views
beyond it. The weights and every other number of the file stay as they are.

    python scripts/colour_fit.py MODEL --out NEW_MODEL [--manifest NAME=FILE ...]

The training and validation cells are the model's own (its sources and split manifests, as recorded in the file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wbc.models.io import load_model_file, save_model
from wbc.training.train import fit_colour_check, own_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--manifest", action="append", default=[])
    a = ap.parse_args()
    model, meta = load_model_file(a.model)
    info = meta["info"]
    cfg, train, val, infos = own_data(info, a.manifest)
    figures = fit_colour_check(model.spec, train, val, infos, cfg)
    info.setdefault("metrics", {}).setdefault("val", {})["colours"] = figures
    save_model(model, a.out, info)
    print(figures)


if __name__ == "__main__":
    main()
