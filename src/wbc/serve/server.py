"""Load the model the fastest way this machine allows and run the app under uvicorn."""

from __future__ import annotations

import hashlib
from pathlib import Path

from wbc.errors import WbcError
from wbc.progress import console

ENGINES = ("auto", "onnx", "pytorch")


def cached_onnx(predictor) -> Path:
    """An fp32 ONNX export of a native model, made once and kept in the wbc cache (keyed by the file's hash)."""
    from wbc.export import export_onnx
    from wbc.models.weights import cache_dir

    digest = hashlib.sha256(predictor.path.read_bytes()).hexdigest()[:16]
    out = cache_dir() / "onnx" / f"{predictor.path.stem}-{digest}.onnx"
    if not out.is_file():
        export_onnx(predictor, out)
    return out


def load_for_serving(model: str | None, engine: str = "auto", threads: int | None = None):
    """(predictor that classifies, explainer or None). auto: ONNX Runtime fp32 when it is installed
    (about 2x PyTorch eager on CPU, same probabilities to 1e-5), heat-maps from the native model."""
    from wbc.predict import load_model

    if engine not in ENGINES:
        raise WbcError(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    first = load_model(model, threads=threads)
    if first.model is None:  # an .onnx file: it classifies; no network for Grad-CAM
        if engine == "pytorch":
            raise WbcError(f"{first.path} is an ONNX model: --engine pytorch needs the native .safetensors model")
        return first, None
    from wbc.explain import Explainer

    explainer = Explainer(first.model)
    if engine == "pytorch":
        return first, explainer
    try:
        fast = load_model(cached_onnx(first), threads=threads)
    except (ImportError, WbcError) as e:
        if engine == "onnx":
            raise WbcError(f"cannot serve with ONNX Runtime: {e}") from None
        console.print(f"ONNX Runtime unavailable ({e}); serving with PyTorch")
        return first, explainer
    fast.path = first.path  # report the model the user chose, not the cache file
    return fast, explainer


def serve(model: str | None, host: str, port: int, engine: str, max_files: int, max_mb: float, threads: int | None = None) -> None:
    import uvicorn

    from wbc.serve.app import Limits, create_app

    predictor, explainer = load_for_serving(model, engine, threads)
    app = create_app(predictor, explainer, Limits(max_files=max_files, max_mb=max_mb))
    console.print(f"serving {predictor.path.name} ({predictor.engine.name}) on http://{host}:{port}  (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
