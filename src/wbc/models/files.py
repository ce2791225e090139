"""The files a command reads, checked before PyTorch loads: a wrong path is said in a second, not in six."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from wbc.errors import WbcError

TRAIN_ONE = "train one with `wbc train`, or omit --model for the shipped one"
EXPORT_ONE = "make one with `wbc export`"
TRAIN_DETECTOR = "train one with `wbc train-detector`, or use --detector classic"
SHIPPED_MODEL = "wbc_lite0.safetensors"
SHIPPED_DETECTOR = "wbc_detector.safetensors"


def asset_path(name: str) -> Path:
    """A file shipped inside the package (the classifier, the detector, the split manifests)."""
    return Path(str(resources.files("wbc") / "assets" / name))


def require_file(path: str | os.PathLike, what: str, make: str, suffix: str = ".safetensors") -> Path:
    """`path` as a Path, or a one-line WbcError when it is missing or a folder (`make`: how to get one)."""
    path = Path(path)
    if not path.exists():
        raise WbcError(f"{what} file not found: {path} ({make})")
    if path.is_dir():
        raise WbcError(f"{path} is a folder: pass the {what} file inside it (e.g. {path / (what + suffix)})")
    return path


def require_model(path: str | os.PathLike | None) -> None:
    """A --model file is there (None: the shipped one, which load_model checks): native or ONNX."""
    if path is None:
        return
    if Path(path).suffix.lower() == ".onnx":
        require_file(path, "model", EXPORT_ONE, ".onnx")
    else:
        require_file(path, "model", TRAIN_ONE)


def require_detector(choice: str | None) -> None:
    """A --detector that names a file (not "learned" or "classic") names one that is there."""
    if choice not in (None, "", "learned", "classic"):
        require_file(choice, "detector", TRAIN_DETECTOR, Path(choice).suffix or ".safetensors")


def require_onnx_out(out: str | os.PathLike) -> Path:
    """An export's destination names an ONNX file (its suffix is how `load_model` knows the engine)."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise WbcError(f"--out must end in .onnx, not '{out.name}'")
    return out
