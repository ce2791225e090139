"""The model file, for the classifier and the detector alike: one safetensors file, weights in
float16 plus JSON metadata in its header; and their ONNX exports, with the same metadata inside.

No pickle: loading a model file can never run code. The metadata carries the spec (classes,
backbone, input size, scaling, calibration, thresholds) and the provenance (split hashes,
metrics, wbc version), so a file is self-describing. Each kind names its format
(`wbc-model/1`, `wbc-detector/1`; ONNX: `wbc-onnx/1`, `wbc-detector-onnx/1`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from wbc._util.io import atomic_save, sha256
from wbc._version import __version__
from wbc.errors import WbcError
from wbc.models.classifier import CellClassifier, ModelSpec
from wbc.models.files import TRAIN_ONE, require_file

FORMAT = "wbc-model/1"
ONNX_FORMAT = "wbc-onnx/1"


def save_weights(model: torch.nn.Module, path: str | os.PathLike, fmt: str, spec: dict, info: dict | None = None) -> None:
    """Any wbc network (its `spec` as a dict) as a float16 safetensors file with the wbc metadata, atomically."""
    state = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": fmt, "spec": json.dumps(spec), "info": json.dumps(info or {}), "wbc_version": __version__}
    atomic_save(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """The file's weights into `model` (float32); raises RuntimeError when they do not fit."""
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()})
    return model


def file_metadata(path: str | os.PathLike, fmt: str, what: str, make: str) -> dict:
    """{"spec", "info", "wbc_version"} of a wbc file of format `fmt`; every damage a one-line WbcError.
    `what` names the kind of file ("model", "detector"), `make` the command that makes one."""
    path = require_file(path, what, make)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WbcError(f"{path} is not a readable wbc {what} file ({str(e).splitlines()[0][:120]}); re-export or re-download it") from None
    kind, found = fmt.split("/")[0], meta.get("format", "")
    if found.startswith(kind + "/") and found != fmt:
        raise WbcError(f"{path} was written by a newer wbc ({meta.get('wbc_version', '?')}, format {found}) than this one "
                       f"({__version__}, format {fmt}): upgrade wbc (pip install -U wbc)")
    if found != fmt:
        raise WbcError(f"{path} is a safetensors file but not a wbc {what} (no '{fmt}' metadata)")
    try:
        return {"spec": json.loads(meta["spec"]), "info": json.loads(meta.get("info", "{}")), "wbc_version": meta.get("wbc_version")}
    except (KeyError, json.JSONDecodeError):
        raise WbcError(f"{path}: the wbc metadata is damaged; re-export or re-download the {what}") from None


def add_onnx_metadata(onnx_path: str, fmt: str, meta: dict, **extra: str) -> None:
    """Write the wbc metadata (format, spec, info, version, `extra`) into an ONNX file in place."""
    import onnx

    m = onnx.load(onnx_path)
    del m.metadata_props[:]
    props = {"format": fmt, "spec": json.dumps(meta["spec"]), "info": json.dumps(meta.get("info", {})), "wbc_version": __version__, **extra}
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    m.producer_name = "wbc"
    onnx.save(m, onnx_path)


def cached_export(path: str | os.PathLike, export: Callable[[Path], object]) -> Path:
    """An ONNX export of a native file, made once by `export(out)` into the wbc cache (keyed by the file's hash)."""
    out = export_path(path)
    if not out.is_file():
        export(out)
    return out


def export_path(path: str | os.PathLike) -> Path:
    """Where the wbc cache keeps the ONNX export of this native file, keyed by its hash and wbc's version: a changed
    file, or an upgraded wbc whose export differs, never meets a stale export."""
    from wbc.models.weights import cache_dir

    path = Path(path)
    return cache_dir() / "onnx" / f"{path.stem}-{sha256(path)[:16]}-wbc{__version__}.onnx"


def save_model(model: CellClassifier, path: str | os.PathLike, info: dict | None = None) -> None:
    save_weights(model, path, FORMAT, model.spec.to_dict(), info)


def wbc_version() -> str:
    return __version__


def read_metadata(path: str | os.PathLike) -> dict:
    return file_metadata(path, FORMAT, "model", TRAIN_ONE)


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CellClassifier, dict]:
    meta = read_metadata(path)
    spec = ModelSpec.from_dict(meta["spec"])
    try:
        model = load_weights(CellClassifier(spec, pretrained=False), path)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise WbcError(f"{path}: the weights are damaged or do not fit backbone {spec.backbone} ({str(e).splitlines()[0][:120]})") from None
    return model.to(device).eval(), meta


def warm_start(model: CellClassifier, path: str | os.PathLike) -> list[str]:
    """Copy a trained model file's backbone and hidden head layers into `model`, and its output
    layer's rows by class name, so adding a class (BLAST) or a source starts from what the file
    already knows rather than from ImageNet. The input size may differ (the convolutions and the pooled
    head do not depend on it): fine-tuning at a higher resolution starts from the lower one's weights.
    Returns the classes that start fresh."""
    old, _ = load_model_file(path)
    new = model.spec
    if (old.spec.backbone, tuple(old.spec.head)) != (new.backbone, tuple(new.head)):
        raise WbcError(f"--init {path}: its network ({old.spec.backbone}, head {list(old.spec.head)}) "
                       f"differs from this run's ({new.backbone}, head {list(new.head)}); give the same --backbone and --head")
    model.backbone.load_state_dict(old.backbone.state_dict())
    last = len(model.head) - 1
    with torch.no_grad():
        for i in range(last):
            if hasattr(model.head[i], "weight"):
                model.head[i].load_state_dict(old.head[i].state_dict())
        for j, name in enumerate(new.classes):
            if name in old.spec.classes:
                k = old.spec.classes.index(name)
                model.head[last].weight[j] = old.head[last].weight[k]
                model.head[last].bias[j] = old.head[last].bias[k]
    return [c for c in new.classes if c not in old.spec.classes]
