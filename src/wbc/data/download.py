"""Fetch the public Kaggle "blood-cells" data when this machine is online.

Datasets are described as data (MedMNIST style). The archive is verified by SHA-256 when a
checksum is pinned here; the Kaggle archive is re-packed by Kaggle from time to time, so instead
of a pinned checksum we verify what matters: the unpacked layout and image counts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from wbc._util.io import sha256
from wbc.data.scan import find_layout
from wbc.errors import WbcError

DATASETS = {
    "blood-cells": {
        "url": "https://www.kaggle.com/api/v1/datasets/download/paultimothymooney/blood-cells",
        "sha256": None,  # not pinned: see the module docstring
        "page": "https://www.kaggle.com/datasets/paultimothymooney/blood-cells",
    },
}


def download(dest: str | os.PathLike, name: str = "blood-cells", url: str | None = None, timeout: float = 30) -> Path:
    info = DATASETS[name]
    dest = Path(dest)
    target = dest / name
    if target.is_dir():
        find_layout(target)
        return target
    url = url or info["url"]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise WbcError(
                f"cannot download {name} from {url} ({getattr(e, 'reason', e)}): on a machine with internet, get it from "
                f"{info['page']}, unzip it to {target}, and pass --data {target} (or set WBC_DATA)"
            ) from None
        digest = sha256(archive)
        if info["sha256"] and digest != info["sha256"]:
            raise WbcError(f"{url}: checksum mismatch (got {digest}); the download is damaged, try again")
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(Path(tmp) / "x")
        except zipfile.BadZipFile:
            raise WbcError(f"{url} did not return a zip archive; download it by hand from {info['page']}") from None
        find_layout(_top(Path(tmp) / "x"))  # a wrong archive fails here, before anything is moved
        os.replace(_top(Path(tmp) / "x"), target)
    (dest / f"{name}.sha256").write_text(f"{digest}  {name}.zip\n")
    return target


def _top(extracted: Path) -> Path:
    """The folder holding dataset2-master (the archive may wrap it in one more folder)."""
    for p in [extracted, *extracted.rglob("*")]:
        if (p / "dataset2-master").is_dir():
            return p
    return extracted
