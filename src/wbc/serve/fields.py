"""POST /api/v1/count: whole smear fields -> cells per field, each WBC classified, totals, differential."""

from __future__ import annotations

import base64

from fastapi import APIRouter, File, Query, UploadFile

from wbc.count.count import count_field, draw, field_summary
from wbc.image.decode import MAX_PIXELS, decode_bytes
from wbc.infer.predictor import RecentCells
from wbc.serve.cells import judged
from wbc.serve.gate import Gate


def count_one(predictor, detector, name: str, data: bytes, px_per_um: float | None, annotate: bool) -> dict:
    from wbc.infer.explain import png_bytes

    # the learned detector tiles (its own, larger limit); the classic one takes one field
    rgb = decode_bytes(data, name, max_pixels=detector.max_pixels if detector.engine else MAX_PIXELS)
    fc = count_field(predictor, rgb, px_per_um, name=name, detector=detector)
    out = fc.to_dict() | {"image": name}
    if annotate:
        out["annotated_png"] = "data:image/png;base64," + base64.b64encode(png_bytes(draw(rgb, fc))).decode()
    return out


def router(predictor, detector, gate: Gate, model_file: str, recent: RecentCells) -> APIRouter:
    api = APIRouter()

    def one(name: str, data: bytes, px_per_um: float | None, annotate: bool) -> dict:
        return count_one(predictor, detector, name, data, px_per_um, annotate)

    @api.post("/api/v1/count")
    async def count(files: list[UploadFile] = File(default=[], description="whole smear fields (e.g. BCCD 640x480 JPEGs)"),
                    px_per_um: float | None = Query(None, gt=0, le=1000, description="pixels a micrometre (BCCD: 14); default: measured in each "
                                                    "field from its red cells (14 assumed when too few); fields are rescaled to the detector's"),
                    annotate: bool = Query(True, description="add the annotated field as a PNG data URL")):
        fields = await gate.run(one, await gate.read(files), px_per_um, annotate)
        labels = [w["class"] for f in fields for w in f["wbc"]]
        warning = judged(predictor, recent, [w for f in fields for w in f["wbc"]])
        return {"model": model_file, "fields": fields, **field_summary([f["counts"] for f in fields], labels, predictor.classes),
                "lab_warning": warning}

    return api
