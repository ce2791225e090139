"""One entry point for inference: a Predictor owns the model *and* its preprocessing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wbc.data.framing import load_input
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


class TorchEngine:
    """The native model in PyTorch (channels-last, no autograd)."""

    name = "pytorch"

    def __init__(self, model, device: torch.device):
        self.model, self.device = model.to(memory_format=torch.channels_last), device

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        return self.model.probabilities(x).cpu()


class Predictor:
    """model.predict(paths / bytes / PIL images / HxWx3 uint8 arrays) -> list[Prediction].

    The engine (PyTorch or ONNX Runtime) maps a uint8 N x 3 x H x W batch to probabilities; the
    Predictor owns what surrounds it: decoding, framing, batching, labels and the review flag.
    """

    def __init__(self, engine, meta: dict, path: Path):
        from wbc.models.classifier import ModelSpec

        self.engine, self.meta, self.path = engine, meta, path
        self.spec = ModelSpec.from_dict(meta["spec"])
        self.classes = list(self.spec.classes)

    @property
    def model(self):
        """The PyTorch network (heat-maps, fine-tuning); None for an ONNX model."""
        return getattr(self.engine, "model", None)

    def input_tensor(self, image) -> torch.Tensor:
        """One image (path, bytes, PIL, RGB array) as the uint8 3xHxW input this model takes."""
        return load_input(image, self.spec.input_size, self.spec.crop)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.engine(batch)

    def predict_proba(self, images: list, batch_size: int = 32, on_batch=None) -> torch.Tensor:
        """Class probabilities (N x classes) in batches; on_batch(n) is told after each batch."""
        out = []
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            out.append(self.probabilities(torch.stack([self.input_tensor(im) for im in chunk])))
            if on_batch:
                on_batch(len(chunk))
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def to_prediction(self, p: torch.Tensor, source: str) -> Prediction:
        k = int(p.argmax())
        return Prediction(source=source, label=self.classes[k], probability=float(p[k]),
                          probabilities={c: float(v) for c, v in zip(self.classes, p)},
                          review=bool(p[k] < self.spec.review_threshold))

    def predict(self, images, batch_size: int = 32) -> list[Prediction]:
        images = [images] if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)) else list(images)
        probs = self.predict_proba(images, batch_size)
        return [self.to_prediction(p, str(im) if isinstance(im, (str, os.PathLike)) else f"<{type(im).__name__}>")
                for im, p in zip(images, probs)]


def load_model(path: str | os.PathLike | None = None, device: str | None = None, threads: int | None = None) -> Predictor:
    """Load a model file (default: the one shipped in the package) ready to predict.

    `.onnx` files run on ONNX Runtime's CPU provider; anything else is read as a native
    (safetensors) wbc model and runs in PyTorch.
    """
    p = Path(path) if path else shipped_model_path()
    if path is None and not p.is_file():
        raise WbcError(f"the shipped model is missing from this install ({p}); reinstall wbc or pass --model")
    if p.suffix.lower() == ".onnx":
        from wbc.onnx_engine import OnnxEngine

        engine = OnnxEngine(p, threads)
        return Predictor(engine, engine.meta, p)
    dev = pick_device(device or "auto", threads)
    model, meta = load_model_file(p, dev)
    return Predictor(TorchEngine(model, dev), meta, p)


def fastest(predictor: Predictor, threads: int | None = None) -> Predictor:
    """The same model on ONNX Runtime (fp32, exported once into the wbc cache) when that is
    installed: about 2x PyTorch eager on 2 CPU cores, probabilities equal to 1e-5. Falls back
    to `predictor` itself."""
    if predictor.model is None:
        return predictor
    try:
        from wbc.export import cached_onnx

        fast = load_model(cached_onnx(predictor), threads=threads)
    except (ImportError, WbcError) as e:
        from wbc.progress import console

        console.print(f"ONNX Runtime unavailable ({e}); using PyTorch", highlight=False)
        return predictor
    fast.path = predictor.path  # report the model the user chose, not the cache file
    return fast


def default_manifest(predictor: Predictor) -> str | None:
    """The split manifest shipped beside the model, when its hash is the one the model was trained with."""
    from wbc.data.split import manifest_hash

    candidate = predictor.path.with_name("split_manifest.csv")
    want = predictor.meta.get("info", {}).get("split_manifest_sha256")
    if candidate.is_file() and want and manifest_hash(candidate) == want:
        return str(candidate)
    return None
