"""The same collection job on a Ray cluster: Ray Data reads and frames the files, ONNX Runtime
actors classify them, and the driver writes the rows exactly as the local engine does.

    wbc predict /shared/cells --out results.csv --engine ray --address ray://head:10001

Without `--address` a local Ray starts on this machine. Files must be readable at the same path
on every node (a shared file system). The model travels through Ray's object store (the ONNX
bytes), so nodes need wbc installed but not the model file. Bad files become error rows, as locally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from wbc.batch import Outcome
from wbc.errors import WbcError


@dataclass
class _Framed:
    """What Predictor.to_prediction reads of a Framed, rebuilt from a Ray batch row."""

    px_per_um: float
    scale: str
    stained_um2: float
    too_small: bool


class FrameBatch:
    """Ray Data stage: paths -> framed pixels (uint8) or the reason a file could not be read."""

    def __init__(self, spec_dict: dict, px_per_um: float | None):
        from wbc.models.classifier import ModelSpec

        self.spec, self.px = ModelSpec.from_dict(spec_dict), px_per_um

    def __call__(self, batch: dict) -> dict:
        from wbc.batch import frame_file

        h, w = self.spec.input_size
        n = len(batch["path"])
        pixels = np.zeros((n, 3, h, w), np.uint8)
        cols = {"px_per_um": np.zeros(n), "scale": [""] * n, "stained_um2": np.zeros(n), "too_small": np.zeros(n, bool), "error": [""] * n}
        for k, path in enumerate(batch["path"]):
            _, f, err = frame_file(str(path), self.spec, self.px)
            if f is None:
                cols["error"][k] = err
                continue
            pixels[k] = f.pixels.numpy()
            cols["px_per_um"][k], cols["scale"][k], cols["stained_um2"][k], cols["too_small"][k] = f.px_per_um, f.scale, f.stained_um2, f.too_small
        return {"i": batch["i"], "path": batch["path"], "pixels": pixels, **{k: np.asarray(v) for k, v in cols.items()}}


class OnnxBatch:
    """Ray Data actor: framed pixels -> class probabilities, one ONNX Runtime session per actor."""

    def __init__(self, model_bytes, threads: int):
        import onnxruntime as ort

        from wbc.onnx_engine import session_options

        data = model_bytes if isinstance(model_bytes, bytes) else __import__("ray").get(model_bytes)
        self.session = ort.InferenceSession(data, session_options(threads), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: dict) -> dict:
        ok = np.array([not e for e in batch["error"]], bool)
        probs = np.zeros((len(ok), self.session.get_outputs()[0].shape[1] or 0), np.float32)
        if ok.any():
            out = self.session.run(None, {self.input: np.ascontiguousarray(batch["pixels"][ok])})[0]
            probs = np.zeros((len(ok), out.shape[1]), np.float32)
            probs[ok] = out
        del batch["pixels"]
        return {**batch, "probs": probs}


def _onnx_bytes(predictor) -> bytes:
    from wbc.export import cached_onnx

    path = predictor.path if predictor.path.suffix.lower() == ".onnx" else cached_onnx(predictor)
    return path.read_bytes()


def ray_stream(address: str | None, actors: int | None = None):
    """A stream function for wbc.batch.run_collection that runs on Ray (local when `address` is None)."""

    def stream(predictor, files: list[str], batch_size: int = 32, workers: int = 0, px_per_um: float | None = None):
        try:
            import ray
        except ImportError:
            raise WbcError("--engine ray needs Ray: pip install 'ray[data]' (or pip install 'wbc[ray]')") from None
        if not files:
            return
        import logging

        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                         **({} if address else {"num_cpus": os.cpu_count() or 1, "object_store_memory": 300 * 1024**2}))
            except Exception as e:  # connection refused, version mismatch, ...
                raise WbcError(f"cannot start or reach Ray{' at ' + address if address else ''}: {str(e).splitlines()[0][:160]}") from None
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order, as locally
        ctx.enable_progress_bars = False
        model_ref = ray.put(_onnx_bytes(predictor))
        n_actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // 2)
        ds = ray.data.from_items([{"i": k, "path": f} for k, f in enumerate(files)], override_num_blocks=max(1, min(len(files) // 64, 200)))
        ds = ds.map_batches(FrameBatch, fn_constructor_args=(predictor.spec.to_dict(), px_per_um), batch_size=batch_size,
                            batch_format="numpy", concurrency=max(1, n_actors))
        ds = ds.map_batches(OnnxBatch, fn_constructor_args=(model_ref, 1), batch_size=batch_size, batch_format="numpy", concurrency=n_actors)
        for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            out = []
            for k in range(len(b["path"])):
                path, err = str(b["path"][k]), str(b["error"][k])
                if err:
                    out.append(Outcome(path, None, err))
                    continue
                f = _Framed(float(b["px_per_um"][k]), str(b["scale"][k]), float(b["stained_um2"][k]), bool(b["too_small"][k]))
                out.append(Outcome(path, predictor.to_prediction(torch.from_numpy(b["probs"][k]), path, f)))
            yield out

    return stream
