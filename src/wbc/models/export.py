"""`wbc export`: the whole model as ONNX (uint8 pixels in, probabilities out), optionally int8.

Preprocessing that belongs to the network (scaling, normalisation, temperature, softmax) is
inside the graph, so any ONNX runtime gets the same probabilities from the same pixels; decoding
and framing stay in wbc.image, shared by every engine. The int8 variant is ONNX Runtime's
static QDQ quantisation with per-channel weights, its activation ranges calibrated on training
images (never on a test split).
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wbc._util.io import atomic_save
from wbc.errors import WbcError
from wbc.models.files import require_onnx_out
from wbc.models.io import ONNX_FORMAT, add_onnx_metadata, cached_export


class _Pixels2Probabilities(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor):
        probs, dist = self.model.scores(pixels.float())
        return probs if dist is None else (probs, dist)


def _write_metadata(path: str, meta: dict, precision: str) -> None:
    add_onnx_metadata(path, ONNX_FORMAT, meta, precision=precision)


def static_same_padding(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """Replace TensorFlow-style "same" convolutions (padding computed from the input size at every
    call) by a constant pad + plain convolution for the one input size this model takes: the
    exported graph loses its Shape/Ceil/Pad chains and ONNX Runtime can fuse the pads."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    sizes: dict[str, tuple] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: sizes.__setitem__(n, tuple(a[0].shape[-2:])))
             for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    for name, m in list(model.named_modules()):
        if isinstance(m, Conv2dSame):
            pad = pad_same_arg(sizes[name], m.weight.shape[-2:], m.stride, m.dilation)
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, 0, m.dilation, m.groups, m.bias is not None)
            conv.weight, conv.bias = m.weight, m.bias
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, nn.Sequential(nn.ZeroPad2d(pad), conv) if any(pad) else conv)
    return model


def _export_fp32(predictor, path: str, opset: int) -> None:
    import warnings

    model = predictor.model
    if model is None:
        raise WbcError(f"{predictor.path} is already an ONNX model: export from the native .safetensors model")
    model = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)  # export leaves it in train mode
    h, w = predictor.spec.input_size
    example = torch.zeros(2, 3, h, w, dtype=torch.uint8)
    model = static_same_padding(model, example.float())
    outputs = ["probabilities", "distance"] if model.openset is not None else ["probabilities"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice is not the user's concern
        torch.onnx.export(_Pixels2Probabilities(model), (example,), path, input_names=["pixels"], output_names=outputs,
                          dynamic_axes={"pixels": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}, opset_version=opset, dynamo=False)
    _write_metadata(path, predictor.meta, "fp32")


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over framed training images, a batch at a time."""

    def __init__(self, predictor, images: list, batch_size: int = 16):
        self.predictor, self.images, self.batch_size, self.i = predictor, images, batch_size, 0

    def get_next(self):
        if self.i >= len(self.images):
            return None
        chunk = self.images[self.i : self.i + self.batch_size]
        self.i += self.batch_size
        return {"pixels": torch.stack([self.predictor.input_tensor(im) for im in chunk]).numpy()}

    def rewind(self):
        self.i = 0


def _quantize_int8(predictor, fp32_path: str, out: str, calibration: list) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise WbcError("int8 export needs calibration images: pass --data with a TRAIN split")
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
        # the open-set distance stays fp32 (quantised, it moved 4 of 52 test cells across near_distance; kept, 1)
        keep = [n.name for n in onnx.load(pre).graph.node if n.name.startswith("/openset/")]
        quantize_static(pre, out, _Calibration(predictor, calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=keep, extra_options={"CalibMovingAverage": True})
    _write_metadata(out, predictor.meta, "int8")


def export_onnx(predictor, out: str | os.PathLike, int8: bool = False, calibration: list | None = None, opset: int = 17) -> Path:
    """Write `out` atomically: fp32, or int8 calibrated on `calibration` (training images)."""
    out = require_onnx_out(out)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, "fp32.onnx")
        _export_fp32(predictor, fp32, opset)
        if int8:
            q = os.path.join(tmp, "int8.onnx")
            _quantize_int8(predictor, fp32, q, calibration or [])
            fp32 = q
        atomic_save(out, lambda dst: os.replace(fp32, dst))
    return out


def cached_onnx(predictor) -> Path:
    """An fp32 ONNX export of a native model, made once and kept in the wbc cache (keyed by the file's hash)."""
    return cached_export(predictor.path, lambda out: export_onnx(predictor, out))


def calibration_images(data: str, per_class: int = 64) -> list[Path]:
    """Evenly spaced TRAIN images of every class (training data only: test splits never tune anything)."""
    from wbc.data.scan import scan

    s = scan(data, check=False)
    recs = [r for r in s.records if r.split in ("TRAIN", "ALL")]
    out = []
    for c in s.classes:
        files = sorted(r.path for r in recs if r.label == c)
        if files:
            out += files[:: max(1, len(files) // per_class)][:per_class]
    return out


@dataclass
class Agreement:
    images: int
    max_abs_diff: float
    same_top_class: float  # fraction of images
    accuracy_native: float | None
    accuracy_exported: float | None


def compare(native, exported, images: list, labels: list[int] | None = None, on_batch=None) -> Agreement:
    """Probabilities of two predictors on the same images: largest difference, top-class agreement."""
    a = native.predict_proba(images, on_batch=on_batch).numpy()
    b = exported.predict_proba(images).numpy()
    acc = (lambda p: float(np.mean(p.argmax(1) == np.asarray(labels)))) if labels is not None else (lambda p: None)
    return Agreement(len(images), float(np.abs(a - b).max()) if len(images) else 0.0, float(np.mean(a.argmax(1) == b.argmax(1))),
                     acc(a), acc(b))
