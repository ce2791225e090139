"""`wbc bench`: speed and memory of every inference path, side by side, on the same images and threads.

Each row runs in its own fresh process, so its peak RSS is its own and one engine's thread pools
or caches cannot help or hurt the next. Rows: the reference design's Xception at its 240x320
input (random weights: speed does not depend on them), the native model in PyTorch eager, its
ONNX fp32 export and its ONNX int8 export; then one training step of round 1 and round 2.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

EPOCH_IMAGES = 7889  # the group-disjoint train split of the Kaggle TRAIN folder (wbc data split)


def _peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM; ru_maxrss would carry the parent's over exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, seconds: float, min_runs: int = 3) -> list[float]:
    """Latencies of repeated fn() calls for about `seconds` (at least `min_runs`)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _xception_predictor(threads: int):
    import torch

    from wbc.infer.engines import TorchEngine
    from wbc.infer.predictor import Predictor
    from wbc.models.classifier import CellClassifier, ModelSpec

    torch.set_num_threads(threads)
    spec = ModelSpec(backbone="xception", input_size=(240, 320))  # the reference: 320x240 input, same dense head
    model = CellClassifier(spec, pretrained=False).eval()
    return Predictor(TorchEngine(model, torch.device("cpu")), {"spec": spec.to_dict(), "info": {}}, Path("xception"))


def measure_inference(kind: str, model_path: str | None, images: list[str], seconds: float, threads: int) -> dict:
    """One row: batch-1 latency, batch-32 throughput, end-to-end files/s (decode included), peak RSS."""
    import torch

    from wbc.infer.predictor import load_model

    torch.set_num_threads(threads)
    p = _xception_predictor(threads) if kind == "xception" else load_model(model_path, threads=threads)
    params = sum(t.numel() for t in p.model.parameters()) if p.model is not None else None
    tensors = [p.input_tensor(f) for f in images[:32]]
    x1, x32 = tensors[0][None], torch.stack((tensors * 32)[:32])
    p.probabilities(x1), p.probabilities(x32)  # warm-up: allocations, kernel selection
    lat = np.array(_timed(lambda: p.probabilities(x1), seconds))
    b32 = np.array(_timed(lambda: p.probabilities(x32), seconds, min_runs=2))
    files = (images * (1 + 256 // max(1, len(images))))[:256]
    n_done, start = 0, time.perf_counter()
    while n_done < 32 or time.perf_counter() - start < seconds:
        chunk = files[(n_done % len(files)) : (n_done % len(files)) + 32] or files[:32]
        p.predict_proba(chunk, batch_size=32)
        n_done += len(chunk)
    e2e = n_done / (time.perf_counter() - start)
    h, w = p.spec.input_size
    return {"path": kind, "engine": p.engine.name, "input": f"{w}x{h}" + (f" ({p.spec.field_um:g} um view)" if p.spec.field_um else f" (crop {p.spec.crop})" if p.spec.crop else ""),
            "parameters": params, "batch1_images_per_s": float(len(lat) / lat.sum()), "batch1_p50_ms": float(np.percentile(lat, 50) * 1e3),
            "batch1_p99_ms": float(np.percentile(lat, 99) * 1e3), "batch32_images_per_s": float(32 * len(b32) / b32.sum()),
            "end_to_end_files_per_s": float(e2e), "peak_rss_mb": _peak_rss_mb()}


def measure_folder(model_path: str, files: list[str], threads: int, workers: int, px_per_um: float | None) -> dict:
    """A `wbc predict FOLDER` run end to end: decoder processes (0: a thread) framing files, batched ONNX inference,
    rows written to a CSV; files/s over the whole run (pool start-up included)."""
    import torch

    from wbc.infer.batch import ResultWriter, run_collection
    from wbc.infer.predictor import load_model

    torch.set_num_threads(threads)
    p = load_model(model_path, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        writer = ResultWriter(Path(tmp) / "out.csv", "csv", p.classes, resume=False)
        start = time.perf_counter()
        s = run_collection(p, files, writer.write, None, 32, workers, px_per_um)
        seconds = time.perf_counter() - start
        writer.close()
    scale = "given" if px_per_um else "measured per image"
    framing = f"{workers} decoder process{'es' if workers != 1 else ''}" if workers else "a framing thread"
    return {"path": f"folder run, {framing}, scale {scale}", "files": len(files),
            "failed": s.failed, "files_per_s": len(files) / seconds, "peak_rss_mb": _peak_rss_mb()}


def measure_training(model_path: str | None, images: list[str], seconds: float, threads: int) -> list[dict]:
    """Seconds per batch of 32 for round 1 (frozen backbone: feature extraction + head step) and round 2."""
    import torch
    import torch.nn.functional as F

    from wbc.image.framing import load_input
    from wbc.infer.predictor import shipped_model_path
    from wbc.models.classifier import CellClassifier, ModelSpec, set_trainable
    from wbc.models.io import read_metadata
    from wbc.training.config import TrainConfig

    torch.set_num_threads(threads)
    spec = ModelSpec.from_dict(read_metadata(model_path or shipped_model_path())["spec"])  # the architecture; weights are not needed
    model = CellClassifier(spec, pretrained=False).to(memory_format=torch.channels_last)
    x = torch.stack(([load_input(f, spec) for f in images[:32]] * 32)[:32]).float().contiguous(memory_format=torch.channels_last)
    y = torch.arange(32) % len(spec.classes)
    cfg = TrainConfig()

    def round1():
        with torch.no_grad():
            model.eval()
            feats = model.features(x)
        model.head.train()
        loss = F.cross_entropy(model.head(feats), y)
        opt1.zero_grad()
        loss.backward()
        opt1.step()

    def round2():
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt2.zero_grad()
        loss.backward()
        opt2.step()

    opt1 = torch.optim.AdamW(model.head.parameters(), lr=1e-3)
    set_trainable(model, cfg.train_stages)
    opt2 = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    rows = []
    stages = "whole network" if cfg.train_stages < 0 else f"last {cfg.train_stages} stages"
    for name, fn in (("train round 1 (features + head)", round1), (f"train round 2 ({stages})", round2)):
        fn()
        t = np.array(_timed(fn, seconds, min_runs=2))
        s = float(np.median(t))
        rows.append({"path": name, "engine": "pytorch", "seconds_per_batch32": s, "minutes_per_epoch": s * EPOCH_IMAGES / 32 / 60,
                     "peak_rss_mb": _peak_rss_mb()})
    return rows


def asked_again(predictor, images: list[str]) -> dict:
    """How many of `images` the default path asks again in each source's colours (wbc.infer.predictor.needs_recheck:
    a sure answer in colours off the sources'), and the network passes an image costs with those test-time views."""
    from wbc.infer.predictor import needs_recheck

    dist: list = []
    probs, framed = predictor.predict_framed(images, distances=dist)
    answers = predictor.to_predictions(probs, [str(f) for f in images], framed, dist, recheck=False)
    asked = sum(needs_recheck(a, predictor.colour_check, predictor.classes) for a in answers)
    views = len(predictor.colour_check.names) if predictor.colour_check is not None else 0
    return {"images": len(images), "asked_again": asked, "passes_per_image": 1 + views * asked / max(1, len(images))}


def _in_fresh_process(fn, *args):
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def bench(model: str | None, images: list[str], seconds: float, threads: int, data: str | None, progress=None, folder_files: int = 1024) -> dict:
    """Export fp32/int8 ONNX of `model` to a temp folder, then time every row in a fresh process."""
    from wbc.infer.predictor import load_model
    from wbc.models.export import calibration_images, export_onnx

    native = load_model(model, threads=threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        export_onnx(native, fp32)
        calib = calibration_images(data, per_class=8) if data else [Path(f) for f in images[:32]]
        export_onnx(native, int8, int8=True, calibration=calib)
        plan = [("xception", None), ("pytorch", model), ("onnx-fp32", fp32), ("onnx-int8", int8)]
        task = progress.add_task("benchmarking", total=len(plan) + 2) if progress else None
        for kind, path in plan:
            rows.append(_in_fresh_process(measure_inference, kind, path, images, seconds, threads))
            if progress:
                progress.advance(task)
        train_rows = _in_fresh_process(measure_training, model, images, seconds, threads)
        if progress:
            progress.advance(task)
        from wbc.infer.batch import default_workers

        folder = (images * (1 + folder_files // max(1, len(images))))[:folder_files]
        px = native.spec.px_per_um or None
        from wbc.image.framing import KAGGLE_PX_PER_UM

        folder_rows = [_in_fresh_process(measure_folder, fp32, folder, threads, w, given) for w in sorted({0, default_workers()})
                       for given in ([None, KAGGLE_PX_PER_UM] if not px else [None])]  # given: as after `wbc adapt` or --px-per-um
        if progress:
            progress.advance(task)
    base = rows[0]
    for r in rows:
        r["batch32_vs_xception"] = r["batch32_images_per_s"] / base["batch32_images_per_s"]
        r["batch1_vs_xception"] = r["batch1_images_per_s"] / base["batch1_images_per_s"]
        r["end_to_end_vs_xception"] = r["end_to_end_files_per_s"] / base["end_to_end_files_per_s"]
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    onnx_b32 = next(r["batch32_images_per_s"] for r in rows if r["path"] == "onnx-fp32")
    for r in folder_rows:
        r["vs_onnx_fp32_batch32"] = r["files_per_s"] / onnx_b32
    views = asked_again(native, images)  # the default path's test-time views, counted in its b32 figure
    views["onnx_fp32_batch32_images_per_s"] = onnx_b32 / views["passes_per_image"]
    views["vs_xception"] = views["onnx_fp32_batch32_images_per_s"] / base["batch32_images_per_s"]
    return {"machine": {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version()},
            "images": len(images), "seconds_per_measure": seconds, "inference": rows, "folder": folder_rows, "training": train_rows,
            "test_time_views": views}
