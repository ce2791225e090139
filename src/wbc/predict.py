"""One entry point for inference: a Predictor owns the model *and* its preprocessing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wbc.data.transforms import load_rgb, to_tensor
from wbc.device import pick_device
from wbc.errors import WbcError
from wbc.models.io import load_model_file

SHIPPED_MODEL = "wbc_lite0.safetensors"


def shipped_model_path() -> Path:
    return Path(str(resources.files("wbc") / "assets" / SHIPPED_MODEL))


@dataclass
class Prediction:
    source: str
    label: str
    probability: float
    probabilities: dict[str, float]
    review: bool

    def to_dict(self) -> dict:
        return {"source": self.source, "class": self.label, "probability": self.probability,
                "probabilities": self.probabilities, "review": self.review}


class Predictor:
    """model.predict(paths / PIL images / HxWx3 uint8 arrays) -> list[Prediction]."""

    def __init__(self, model, meta: dict, path: Path, device: torch.device):
        self.model, self.meta, self.path, self.device = model, meta, path, device
        self.spec = model.spec
        self.classes = list(self.spec.classes)

    def _tensor(self, image) -> torch.Tensor:
        h, w = self.spec.input_size
        if isinstance(image, (str, os.PathLike)):
            return load_rgb(image, (h, w))
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise WbcError(f"expected an HxWx3 RGB array, got shape {image.shape}")
            image = Image.fromarray(image.astype(np.uint8))
        if isinstance(image, Image.Image):
            return to_tensor(image, (h, w))
        raise WbcError(f"cannot classify a {type(image).__name__}: pass a file path, a PIL image or an RGB array")

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        return self.model.probabilities(x).cpu()

    def predict_proba(self, images: list, batch_size: int = 32, on_batch=None) -> torch.Tensor:
        """Class probabilities (N x classes) in batches; on_batch(n) is told after each batch."""
        out = []
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            out.append(self.probabilities(torch.stack([self._tensor(im) for im in chunk])))
            if on_batch:
                on_batch(len(chunk))
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def predict(self, images, batch_size: int = 32) -> list[Prediction]:
        images = [images] if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) else list(images)
        out: list[Prediction] = []
        for im, p in zip(images, self.predict_proba(images, batch_size)):
            k = int(p.argmax())
            out.append(Prediction(
                source=str(im) if isinstance(im, (str, os.PathLike)) else f"<{type(im).__name__}>",
                label=self.classes[k], probability=float(p[k]),
                probabilities={c: float(v) for c, v in zip(self.classes, p)},
                review=bool(p[k] < self.spec.review_threshold),
            ))
        return out

def load_model(path: str | os.PathLike | None = None, device: str | None = None) -> Predictor:
    """Load a model file (default: the one shipped in the package) ready to predict."""
    p = Path(path) if path else shipped_model_path()
    if path is None and not p.is_file():
        raise WbcError(f"the shipped model is missing from this install ({p}); reinstall wbc or pass --model")
    dev = pick_device(device or "auto")
    model, meta = load_model_file(p, dev)
    model = model.to(memory_format=torch.channels_last)
    return Predictor(model, meta, p, dev)


def default_manifest(predictor: Predictor) -> str | None:
    """The split manifest shipped beside the model, when its hash is the one the model was trained with."""
    from wbc.data.split import manifest_hash

    candidate = predictor.path.with_name("split_manifest.csv")
    want = predictor.meta.get("info", {}).get("split_manifest_sha256")
    if candidate.is_file() and want and manifest_hash(candidate) == want:
        return str(candidate)
    return None
