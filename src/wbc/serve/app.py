"""The HTTP API and the web page, one FastAPI app around one Predictor.

Inference and Grad-CAM run in worker threads (FastAPI's threadpool), never on the event loop,
so /healthz answers while a batch is being classified. Every user mistake is a 4xx with a
`detail` that names the file and says what to do.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from wbc._version import __version__
from wbc.infer.predictor import RecentCells
from wbc.serve import cells, fields
from wbc.serve.gate import Gate
from wbc.serve.headers import SecurityHeaders
from wbc.serve.limits import Limits


def static_dir() -> Path:
    return Path(str(resources.files("wbc") / "serve" / "static"))


def model_info(predictor, explain: bool) -> dict:
    spec, info = predictor.spec, predictor.meta.get("info", {})
    return {"classes": predictor.classes, "backbone": spec.backbone, "input_size": list(spec.input_size), "crop": spec.crop,
            "field_um": spec.field_um, "px_per_um": spec.px_per_um or None, "sources": sorted(info.get("sources", {})),
            "adapted": (info.get("adapted") or {}).get("images_folder"),
            "engine": predictor.engine.name, "file": predictor.path.name, "wbc_version": predictor.meta.get("wbc_version"),
            "sha256": predictor.sha256,
            "temperature": spec.temperature, "review_threshold": spec.review_threshold, "always_reviewed": spec.always_review, "metrics": info.get("metrics", {}),
            "metrics_measured": "when the model was trained, by that day's wbc (`wbc evaluate` measures them with this one)",
            "near_distance": spec.near_distance or None, "far_distance": spec.far_distance or None,
            "explain": explain}


def create_app(predictor, explainer=None, limits: Limits | None = None, detector=None, review: tuple | None = None) -> FastAPI:
    """`explainer`: a wbc.infer.explain.Explainer for ?explain=true (None: heat-maps are refused with 409);
    `detector`: the cell detector for /api/v1/count (None: the shipped learned one when installed, else classic);
    `review`: (session factory, data folder) of a review station (wbc.review) for /api/v1/review (None: off)."""
    if detector is None:
        from wbc.count.detector import default_detector

        detector = default_detector()
    limits = limits or Limits()
    app = FastAPI(title="wbc", version=__version__,
                  description="White blood cell classification: class probabilities, a review flag and Grad-CAM heat-maps.")
    app.add_middleware(SecurityHeaders)
    info = model_info(predictor, explain=explainer is not None) | {"detector": detector.name}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        return {"ready": True, "model": info["file"], "engine": info["engine"]}

    @app.get("/api/v1/model")
    def model():
        return info

    gate = Gate(limits)
    recent = RecentCells(predictor)  # the lab's cells over its requests (wbc.serve.cells.judged)
    app.include_router(cells.router(predictor, explainer, gate, info["file"], recent))
    app.include_router(fields.router(predictor, detector, gate, info["file"], recent))
    if review is not None:
        from wbc.serve import review as review_api

        app.include_router(review_api.router(review[0], review[1], predictor, detector, gate, explainer, limits.idle_minutes))

        @app.get("/review", include_in_schema=False)
        def review_page():
            return FileResponse(static_dir() / "review.html")

    @app.exception_handler(RequestValidationError)
    async def bad_request(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse(status_code=422, content={"detail": f"bad request: {where or 'body'}: {first.get('msg', 'invalid')}"})

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(static_dir() / "index.html")

    return app
