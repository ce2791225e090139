"""POST /api/v1/classify: single-cell images -> class, probabilities, review flag, optional heat-map."""

from __future__ import annotations

import base64
from functools import cached_property

import torch
from fastapi import APIRouter, File, HTTPException, Query, UploadFile

from wbc.image.decode import decode_with_quality
from wbc.image.framing import frame, run_scale
from wbc.infer.predictor import RecentCells, flag_run, lab_check
from wbc.serve.gate import Gate


def classify_one(predictor, explainer, name: str, data: bytes, explain: bool, px_per_um) -> dict:
    """One image's answer; `px_per_um`: given, None (measured), or the request's `RunScale`."""
    rgb, quality = decode_with_quality(data, name)
    framed = frame(rgb, predictor.spec, px_per_um)
    framed.jpeg_quality = quality
    x = framed.pixels
    probs, dist = predictor.scores(x[None])
    p = probs[0]
    out = predictor.to_prediction(p, name, framed, None if dist is None else dist[0]).to_dict()
    out["filename"] = out.pop("source")
    out["size"] = [int(rgb.shape[1]), int(rgb.shape[0])]
    if explain and out["white_cell"]:
        from wbc.infer.explain import overlay, png_bytes

        heat = explainer.heatmap(x, int(torch.argmax(p)))
        out["heatmap_png"] = "data:image/png;base64," + base64.b64encode(png_bytes(overlay(x, heat))).decode()
    return out


class RequestScale:
    """The scale of a request's images as a run (`wbc.image.framing.run_scale`: ten or more images, one microscope):
    the cells take it (unless their own red cells say strongly otherwise), as in `wbc predict` on a folder. Measured
    at the first image, inside the gate's queue bound and time limit, and once a request."""

    def __init__(self, blobs: list[tuple[str, bytes]]):
        self.blobs = blobs

    @cached_property
    def value(self):
        return run_scale([data for _, data in self.blobs])


def judged(predictor, recent: RecentCells, answers: list[dict]) -> str | None:
    """Flag `answers` (one request's cells) as a run, and as the latest cells of the service's recent ones (a lab far
    from every training source is seen over its requests, not only within one); the warning, said once, or None."""
    lab = lab_check(predictor, answers)
    flag_run(answers, lab)
    late = recent.judge(answers)
    if lab.fired or not late.judge():
        return lab.warning()
    flag_run(answers, late)
    return "; ".join(filter(None, [late.warning(), lab.warning()]))


def router(predictor, explainer, gate: Gate, model_file: str, recent: RecentCells) -> APIRouter:
    api = APIRouter()

    def one(name: str, data: bytes, explain: bool, px_per_um) -> dict:
        if isinstance(px_per_um, RequestScale):
            px_per_um = px_per_um.value
        return classify_one(predictor, explainer, name, data, explain, px_per_um)

    @api.post("/api/v1/classify")
    async def classify(files: list[UploadFile] = File(default=[], description="single-cell images (JPEG, PNG, ...) from any microscope; the scale is measured from the red cells"),
                       explain: bool = Query(False, description="add a Grad-CAM heat-map overlay (PNG, base64 data URL) to each result"),
                       px_per_um: float | None = Query(None, gt=0, le=1000, description="pixels a micrometre of the images (default: measured from their red cells; "
                                                                             "with ten or more images, the run's median unless an image's own red cells say strongly otherwise)")):
        if explain and explainer is None:
            raise HTTPException(409, "heat-maps need the native model: start `wbc serve` with a .safetensors model, not an .onnx file")
        blobs = await gate.read(files)
        results = await gate.run(one, blobs, explain, px_per_um or RequestScale(blobs))
        return {"model": model_file, "results": results, "lab_warning": judged(predictor, recent, results)}

    return api
