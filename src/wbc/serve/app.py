"""The HTTP API and the web page, one FastAPI app around one Predictor.

Inference and Grad-CAM run in worker threads (FastAPI's threadpool), never on the event loop,
so /healthz answers while a batch is being classified. Every user mistake is a 4xx with a
`detail` that names the file and says what to do.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import wbc
from wbc.data.framing import MAX_PIXELS, decode_bytes, frame
from wbc.errors import BadImage, ImageTooLarge


@dataclass
class Limits:
    max_files: int = 50  # images a request
    max_mb: float = 10.0  # size of one uploaded file
    queue: int = 32  # requests classifying or waiting to; more get 503 + Retry-After
    timeout_s: float = 120.0  # a request running longer gets 504


def static_dir() -> Path:
    return Path(str(resources.files("wbc") / "serve" / "static"))


def model_info(predictor, explain: bool) -> dict:
    spec, info = predictor.spec, predictor.meta.get("info", {})
    return {"classes": predictor.classes, "backbone": spec.backbone, "input_size": list(spec.input_size), "crop": spec.crop,
            "field_um": spec.field_um, "px_per_um": spec.px_per_um or None, "sources": sorted(info.get("sources", {})),
            "adapted": (info.get("adapted") or {}).get("images_folder"),
            "engine": predictor.engine.name, "file": predictor.path.name, "wbc_version": predictor.meta.get("wbc_version"),
            "temperature": spec.temperature, "review_threshold": spec.review_threshold, "metrics": info.get("metrics", {}),
            "explain": explain}


def detector_name(detector) -> str:
    return "classic" if detector == "classic" else f"learned ({detector.path.name})"


def create_app(predictor, explainer=None, limits: Limits | None = None, detector=None) -> FastAPI:
    """`explainer`: a wbc.explain.Explainer for ?explain=true (None: heat-maps are refused with 409);
    `detector`: the cell detector for /api/v1/count (None: the shipped learned one when installed, else classic)."""
    if detector is None:
        from wbc.count.detector import default_detector

        detector = default_detector()
    limits = limits or Limits()
    app = FastAPI(title="wbc", version=wbc.__version__,
                  description="White blood cell classification: class probabilities, a review flag and Grad-CAM heat-maps.")
    info = model_info(predictor, explain=explainer is not None) | {"detector": detector_name(detector)}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        return {"ready": True, "model": info["file"], "engine": info["engine"]}

    @app.get("/api/v1/model")
    def model():
        return info

    async def _read_all(files: list[UploadFile]) -> list[tuple[str, bytes]]:
        """The uploads as (name, bytes), with the request limits applied before any decoding."""
        if not files:
            raise HTTPException(400, "no image in the request: send one or more files in the multipart field 'files'")
        if len(files) > limits.max_files:
            raise HTTPException(413, f"{len(files)} images in one request: send at most {limits.max_files}")
        cap = int(limits.max_mb * 1024 * 1024)
        blobs = []
        for f in files:
            data = await f.read(cap + 1)
            if len(data) > cap:
                raise HTTPException(413, f"{f.filename} is over the {limits.max_mb:g} MB upload limit: send a smaller image")
            blobs.append((f.filename or "upload", data))
        return blobs

    async def _in_worker(fn, *args):
        """Run fn off the event loop; an unreadable or over-large image is the client's 415/413."""
        try:
            return await run_in_threadpool(fn, *args)
        except ImageTooLarge as e:
            raise HTTPException(413, str(e)) from None
        except BadImage as e:
            raise HTTPException(415, str(e)) from None

    busy = {"requests": 0}

    async def _run(one, blobs: list[tuple[str, bytes]], *args) -> list[dict]:
        """Every file of a request through `one`, under the queue bound and the time limit."""
        if busy["requests"] >= limits.queue:
            raise HTTPException(503, f"busy: {busy['requests']} requests are queued (limit {limits.queue}); retry in a second",
                                headers={"Retry-After": "1"})
        busy["requests"] += 1
        try:
            async def every_file():
                return [await _in_worker(one, name, data, *args) for name, data in blobs]

            return await asyncio.wait_for(every_file(), limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took over {limits.timeout_s:g} s: send fewer or smaller images") from None
        finally:
            busy["requests"] -= 1

    def classify_one(name: str, data: bytes, explain: bool, px_per_um: float | None) -> dict:
        rgb = decode_bytes(data, name)
        framed = frame(rgb, predictor.spec, px_per_um)
        x = framed.pixels
        p = predictor.probabilities(x[None])[0]
        out = predictor.to_prediction(p, name, framed).to_dict()
        out["filename"] = out.pop("source")
        out["size"] = [int(rgb.shape[1]), int(rgb.shape[0])]
        if explain and out["white_cell"]:
            from wbc.explain import overlay, png_bytes

            heat = explainer.heatmap(x, int(torch.argmax(p)))
            out["heatmap_png"] = "data:image/png;base64," + base64.b64encode(png_bytes(overlay(x, heat))).decode()
        return out

    @app.post("/api/v1/classify")
    async def classify(files: list[UploadFile] = File(default=[], description="single-cell images (JPEG, PNG, ...) from any microscope; the scale is measured from the red cells"),
                       explain: bool = Query(False, description="add a Grad-CAM heat-map overlay (PNG, base64 data URL) to each result"),
                       px_per_um: float | None = Query(None, gt=0, le=1000, description="pixels a micrometre of the images (default: measured from their red cells)")):
        if explain and explainer is None:
            raise HTTPException(409, "heat-maps need the native model: start `wbc serve` with a .safetensors model, not an .onnx file")
        results = await _run(classify_one, await _read_all(files), explain, px_per_um)
        return {"model": info["file"], "results": results}

    def count_one(name: str, data: bytes, px_per_um: float, annotate: bool) -> dict:
        from wbc.count.count import count_field, draw
        from wbc.explain import png_bytes

        from wbc.count.count import COUNT_MAX_PIXELS

        rgb = decode_bytes(data, name, max_pixels=COUNT_MAX_PIXELS if detector != "classic" else MAX_PIXELS)
        fc = count_field(predictor, rgb, px_per_um, name=name, detector=detector)
        out = fc.to_dict() | {"image": name}
        if annotate:
            out["annotated_png"] = "data:image/png;base64," + base64.b64encode(png_bytes(draw(rgb, fc))).decode()
        return out

    @app.post("/api/v1/count")
    async def count(files: list[UploadFile] = File(default=[], description="whole smear fields (e.g. BCCD 640x480 JPEGs)"),
                    px_per_um: float = Query(14.0, gt=0, le=1000, description="pixels a micrometre (BCCD: 14); other magnifications are rescaled"),
                    annotate: bool = Query(True, description="add the annotated field as a PNG data URL")):
        from wbc.count.count import differential

        fields = await _run(count_one, await _read_all(files), px_per_um, annotate)
        labels = [w["class"] for f in fields for w in f["wbc"]]
        totals = {k: sum(f["counts"][k] for f in fields) for k in ("RBC", "WBC", "Platelets")}
        return {"model": info["file"], "fields": fields, "totals": totals, "differential": differential(labels, predictor.classes)}

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
