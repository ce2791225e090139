"""Where the Kaggle blood-cells data is: --data, then $WBC_DATA, then ../shared/data/blood-cells."""

from __future__ import annotations

import os
from pathlib import Path

from wbc.errors import WbcError

DEFAULTS = [Path("../shared/data/blood-cells"), Path(__file__).resolve().parents[4] / "shared" / "data" / "blood-cells"]


def resolve_data(arg: str | None) -> str:
    if arg:
        return arg
    env = os.environ.get("WBC_DATA")
    if env:
        p = Path(env)
        if not p.is_dir():  # said now: else only once the model has loaded
            raise WbcError(f"WBC_DATA is '{env}', not a folder: point it at the dataset (or unset it) or pass --data DIR")
        return str(p / "blood-cells") if (p / "blood-cells").is_dir() else env
    for p in DEFAULTS:
        if p.is_dir():
            return str(p)
    raise WbcError(
        "no blood-cells dataset found: pass --data DIR, set WBC_DATA, or run `wbc data download` "
        "(or put the Kaggle 'blood-cells' folder at ../shared/data/blood-cells)"
    )


def resolve_bccd(arg: str | None) -> str:
    """BCCD (Pascal VOC): --data, then $WBC_BCCD, then ../shared/data/bccd."""
    if arg:
        return arg
    if os.environ.get("WBC_BCCD"):
        if not Path(os.environ["WBC_BCCD"]).is_dir():
            raise WbcError(f"WBC_BCCD is '{os.environ['WBC_BCCD']}', not a folder: point it at BCCD (or unset it) or pass --data DIR")
        return os.environ["WBC_BCCD"]
    for p in (d.parent / "bccd" for d in DEFAULTS):
        if p.is_dir():
            return str(p)
    raise WbcError("no BCCD dataset found: pass --data DIR (a Pascal VOC folder from github.com/Shenggan/BCCD_Dataset) or set WBC_BCCD")
