"""Atomic file writes (a crash mid-write never leaves a half-written file in place), and a file's digest."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256, read in blocks: the identity a lab's validation records for a model file, a download's
    check, a split manifest's and an ONNX export's key."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tempfile(path: Path) -> str:
    """A temp file beside `path` with ordinary permissions (mkstemp's are owner-only)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tempfile(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save(path: str | os.PathLike, writer) -> None:
    """Call writer(tmp_path) then move tmp into place (for libraries that write by filename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tempfile(path)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers replace the file (and its ordinary permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
