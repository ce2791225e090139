"""POST /api/v1/classify: single-cell images -> class, probabilities, review flag, optional heat-map."""

from __future__ import annotations

import base64

import torch
from fastapi import APIRouter, File, HTTPException, Query, UploadFile

from wbc.image.decode import decode_bytes
from wbc.image.framing import frame
from wbc.infer.predictor import lab_check
from wbc.serve.gate import Gate


def classify_one(predictor, explainer, name: str, data: bytes, explain: bool, px_per_um: float | None) -> dict:
    rgb = decode_bytes(data, name)
    framed = frame(rgb, predictor.spec, px_per_um)
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


def router(predictor, explainer, gate: Gate, model_file: str) -> APIRouter:
    api = APIRouter()

    def one(name: str, data: bytes, explain: bool, px_per_um: float | None) -> dict:
        return classify_one(predictor, explainer, name, data, explain, px_per_um)

    @api.post("/api/v1/classify")
    async def classify(files: list[UploadFile] = File(default=[], description="single-cell images (JPEG, PNG, ...) from any microscope; the scale is measured from the red cells"),
                       explain: bool = Query(False, description="add a Grad-CAM heat-map overlay (PNG, base64 data URL) to each result"),
                       px_per_um: float | None = Query(None, gt=0, le=1000, description="pixels a micrometre of the images (default: measured from their red cells)")):
        if explain and explainer is None:
            raise HTTPException(409, "heat-maps need the native model: start `wbc serve` with a .safetensors model, not an .onnx file")
        results = await gate.run(one, await gate.read(files), explain, px_per_um)
        return {"model": model_file, "results": results, "lab_warning": lab_check(predictor, results).warning()}

    return api
