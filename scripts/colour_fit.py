"""Give a trained model file its colour statistics (what `wbc train` now does at its end): a Gaussian of each
source's training views' colours, the limit at COLOUR_QUANTILE of their distances, the share of validation views
beyond it. The weights and every other number of the file stay as they are.

    python scripts/colour_fit.py MODEL --out NEW_MODEL [--manifest NAME=FILE ...]

The training and validation cells are the model's own (its sources and split manifests, as recorded in the file).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from wbc.data.sources import load_rows, parse_sources
from wbc.errors import WbcError
from wbc.models.io import load_model_file, save_model
from wbc.training.config import TrainConfig
from wbc.training.train import fit_colour_check


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--manifest", action="append", default=[])
    a = ap.parse_args()
    model, meta = load_model_file(a.model)
    info = meta["info"]
    conf = info["config"]
    keep = ("size", "field_um", "val_fraction", "seed", "batch_size", "white_balance", "white_balance_image", "stain_norm")
    cfg = TrainConfig(**{k: v for k, v in conf.items() if k in keep})
    given = dict(m.split("=", 1) for m in a.manifest)
    manifests = [f"{k}={v}" for k, v in (dict(m.split("=", 1) for m in conf["manifest"]) | given).items()]
    with tempfile.TemporaryDirectory() as tmp:
        rows, infos = load_rows(parse_sources(conf["data"], manifests), Path(tmp), cfg.val_fraction, cfg.seed)
    for name, src in infos.items():
        want = info["sources"][name]["manifest_sha256"]
        if src.manifest_sha256 != want:
            raise WbcError(f"{name}: the manifest found does not hash as the one the model was trained with ({want[:12]})")
    train, val = [r for r in rows if r.split == "train"], [r for r in rows if r.split == "val"]
    figures = fit_colour_check(model.spec, train, val, infos, cfg)
    info.setdefault("metrics", {}).setdefault("val", {})["colours"] = figures
    save_model(model, a.out, info)
    print(figures)


if __name__ == "__main__":
    main()
