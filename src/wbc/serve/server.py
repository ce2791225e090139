"""Load the model the fastest way this machine allows and run the app under uvicorn."""

from __future__ import annotations

import logging

from wbc.errors import WbcError
from wbc.serve.limits import Limits

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnx", "pytorch")


def load_for_serving(model: str | None, engine: str = "auto", threads: int | None = None):
    """(predictor that classifies, explainer or None). auto: ONNX Runtime fp32 when it is installed
    (about 2x PyTorch eager on CPU, same probabilities to 1e-5), heat-maps from the native model."""
    from wbc.infer.predictor import load_model

    if engine not in ENGINES:
        raise WbcError(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    first = load_model(model, threads=threads)
    if first.model is None:  # an .onnx file: it classifies; no network for Grad-CAM
        if engine == "pytorch":
            raise WbcError(f"{first.path} is an ONNX model: --engine pytorch needs the native .safetensors model")
        return first, None
    from wbc.infer.explain import Explainer
    from wbc.infer.predictor import fastest

    explainer = Explainer(first.model)
    if engine == "pytorch":
        return first, explainer
    fast = fastest(first, threads)
    if fast is first and engine == "onnx":
        raise WbcError("cannot serve with ONNX Runtime: it is not installed or the export failed (pip install onnxruntime onnx)")
    return fast, explainer


def serve(model: str | None, host: str, port: int, engine: str = "auto", limits: Limits | None = None, threads: int | None = None,
          review_data: str | None = None, review_db: str | None = None) -> None:
    import socket

    import uvicorn

    from wbc.serve.app import create_app

    with socket.socket() as probe:  # say so before spending seconds on loading the model
        try:
            probe.bind((host, port))
        except OSError as e:
            raise WbcError(f"cannot listen on {host}:{port} ({e.strerror}): pass another --port or --host") from None
    review = None
    if review_data:
        from wbc.review.db import open_database

        review = (open_database(review_data, review_db), review_data)
    predictor, explainer = load_for_serving(model, engine, threads)
    app = create_app(predictor, explainer, limits or Limits(), review=review)
    log.info(f"serving {predictor.path.name} ({predictor.engine.name}) on http://{host}:{port}  (API docs: /docs)")
    # SIGTERM / Ctrl-C: stop accepting, let requests in flight finish (up to 30 s), then exit
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
