"""What a backbone costs at an input size, before a model of it is trained: ONNX Runtime fp32, batch 32.

    python scripts/backbone_speed.py [--cases tf_efficientnet_lite0@192,tf_efficientnet_lite2@160,...] [--repeats 5]

Each case is the timm backbone with a 9-class linear layer (random weights: the time does not depend on them),
exported to ONNX and timed at batch 32 on 2 threads, the cases interleaved so that a busy machine slows them alike;
the median of the repeats after the first. `wbc bench` times a trained model file end to end; this only compares
backbones and sizes, to choose what to train.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
import timm
import torch


def session(name: str, size: int, folder: str) -> ort.InferenceSession:
    model = timm.create_model(name, pretrained=False, num_classes=9).eval()
    path = os.path.join(folder, f"{name}_{size}.onnx")
    torch.onnx.export(model, torch.zeros(1, 3, size, size), path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="tf_efficientnet_lite0@192,tf_efficientnet_lite2@160,tf_efficientnet_lite2@176,tf_efficientnet_lite2@192")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    cases = [(c.split("@")[0], int(c.split("@")[1])) for c in a.cases.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {c: session(*c, tmp) for c in cases}
        inputs = {c: np.random.default_rng(0).random((32, 3, c[1], c[1]), dtype=np.float32) for c in cases}
        times: dict = {c: [] for c in cases}
        for _ in range(a.repeats):
            for c, s in sessions.items():
                start = time.perf_counter()
                s.run(None, {"x": inputs[c]})
                times[c].append(time.perf_counter() - start)
    for (name, size), t in times.items():
        median = float(np.median(t[1:]))
        print(f"{name} at {size} px: batch 32 in {median:.3f} s, {32 / median:.0f} images/s")


if __name__ == "__main__":
    main()
