"""The engines a Predictor drives: uint8 N x 3 x H x W in, class probabilities out (`scores`: with each
cell's distance to the nearest known type, when the model holds the statistics).

TorchEngine runs the native model in PyTorch; OnnxEngine an exported one (.onnx, preprocessing inside) on
ONNX Runtime's CPU provider, with the wbc metadata read from the file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from wbc.errors import WbcError
from wbc.models.files import EXPORT_ONE, require_file
from wbc.models.io import ONNX_FORMAT as FORMAT


def session_options(threads: int | None = None, spinning: bool = True):
    """`spinning` off: idle ONNX Runtime threads sleep instead of busy-waiting for work, leaving the core to a
    framing thread beside them (wbc.infer.batch)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings about unused initialisers are noise to a user
    return so


class OnnxEngine:
    """uint8 N x 3 x H x W -> probabilities, with the wbc metadata read from the file."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise WbcError("ONNX models need onnxruntime: pip install onnxruntime") from None
        path = require_file(path, "model", EXPORT_ONE, ".onnx")
        self.path, options = path, session_options(threads, spinning)
        self.threads, self.spinning = options.intra_op_num_threads, spinning
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for every kind of damage
            raise WbcError(f"{path} is not a readable ONNX model ({str(e).splitlines()[0][:120]}); export it again with `wbc export`") from None
        props = self.session.get_modelmeta().custom_metadata_map
        fmt = props.get("format", "")
        if fmt.startswith("wbc-onnx/") and fmt != FORMAT:
            raise WbcError(f"{path} was exported by a newer wbc ({props.get('wbc_version', '?')}, format {fmt}): upgrade wbc (pip install -U wbc)")
        if fmt != FORMAT:
            raise WbcError(f"{path} is an ONNX model but not one exported by `wbc export` (no '{FORMAT}' metadata)")
        self.meta = {"spec": json.loads(props["spec"]), "info": json.loads(props.get("info", "{}")),
                     "wbc_version": props.get("wbc_version"), "precision": props.get("precision", "fp32")}
        self.name = f"onnx-{self.meta['precision']}"
        self.input = self.session.get_inputs()[0].name

    def scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = np.ascontiguousarray(batch.numpy() if isinstance(batch, torch.Tensor) else batch, dtype=np.uint8)
        out = self.session.run(None, {self.input: x})
        return torch.from_numpy(out[0]), torch.from_numpy(out[1]) if len(out) > 1 else None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.scores(batch)[0]


class TorchEngine:
    """The native model in PyTorch (channels-last, no autograd)."""

    name = "pytorch"

    def __init__(self, model, device: torch.device):
        self.model, self.device = model.to(memory_format=torch.channels_last), device

    @torch.no_grad()
    def scores(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = batch.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        probs, dist = self.model.scores(x)
        return probs.cpu(), dist.cpu() if dist is not None else None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.scores(batch)[0]
