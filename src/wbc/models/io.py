"""The model file: one safetensors file, weights in float16 plus JSON metadata in its header.

No pickle: loading a model file can never run code. The metadata carries the ModelSpec (classes,
backbone, input size, scaling, calibration temperature, review threshold) and the provenance
(hash of the split manifest, metrics, wbc version), so a file is self-describing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from wbc.errors import WbcError
from wbc.io_utils import atomic_save
from wbc.models.classifier import CellClassifier, ModelSpec

FORMAT = "wbc-model/1"


def save_model(model: CellClassifier, path: str | os.PathLike, info: dict | None = None) -> None:
    import wbc

    state = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "spec": json.dumps(model.spec.to_dict()), "info": json.dumps(info or {}), "wbc_version": wbc.__version__}
    atomic_save(path, lambda tmp: save_file(state, tmp, metadata=meta))


def wbc_version() -> str:
    import wbc

    return wbc.__version__


def read_metadata(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise WbcError(f"model file not found: {path} (train one with `wbc train`, or omit --model for the shipped one)")
    if path.is_dir():
        raise WbcError(f"{path} is a folder: pass the model file inside it (e.g. {path}/model.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WbcError(f"{path} is not a readable wbc model file ({str(e).splitlines()[0][:120]}); re-export or re-download it") from None
    fmt = meta.get("format", "")
    if fmt.startswith("wbc-model/") and fmt != FORMAT:
        raise WbcError(f"{path} was written by a newer wbc ({meta.get('wbc_version', '?')}, format {fmt}) than this one "
                       f"({wbc_version()}, format {FORMAT}): upgrade wbc (pip install -U wbc)")
    if fmt != FORMAT:
        raise WbcError(f"{path} is a safetensors file but not a wbc model (no '{FORMAT}' metadata)")
    try:
        return {"spec": json.loads(meta["spec"]), "info": json.loads(meta.get("info", "{}")), "wbc_version": meta.get("wbc_version")}
    except (KeyError, json.JSONDecodeError):
        raise WbcError(f"{path}: the wbc metadata is damaged; re-export or re-download the model") from None


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CellClassifier, dict]:
    meta = read_metadata(path)
    spec = ModelSpec.from_dict(meta["spec"])
    model = CellClassifier(spec, pretrained=False)
    try:
        state = load_file(str(path))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (SafetensorError, RuntimeError, OSError) as e:
        raise WbcError(f"{path}: the weights are damaged or do not fit backbone {spec.backbone} ({str(e).splitlines()[0][:120]})") from None
    return model.to(device).eval(), meta
