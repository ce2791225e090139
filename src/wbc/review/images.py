"""Cell images as files beside the database, named by their content (SHA-256): the same image imported twice
is stored once, a name never points at other pixels, and the page serves files, not blobs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from wbc._util.io import atomic_write_bytes

IMAGES = "images"


def store(data_dir: str | os.PathLike, data: bytes, ext: str) -> str:
    """Write `data` (an encoded image) under data_dir/images/ab/<sha256>.<ext> once; its path relative to data_dir."""
    digest = hashlib.sha256(data).hexdigest()
    rel = Path(IMAGES) / digest[:2] / f"{digest}.{ext.lstrip('.').lower() or 'bin'}"
    path = Path(data_dir) / rel
    if not path.is_file():
        atomic_write_bytes(path, data)
    return rel.as_posix()


def resolve(data_dir: str | os.PathLike, rel: str) -> Path:
    """The file of a stored image; refuses any path that would leave the images folder."""
    root = (Path(data_dir) / IMAGES).resolve()
    path = (Path(data_dir) / rel).resolve()
    if root not in path.parents:
        raise ValueError(f"not a stored image: {rel}")
    return path
