"""The HTTP API through FastAPI's TestClient: real images, the shipped model, every bad input."""

import base64
import hashlib
import io

import numpy as np
import pytest
from conftest import CLASSES, PBC_CLASSES, kaggle_images
from fastapi.testclient import TestClient
from PIL import Image

from wbc.infer.predictor import shipped_model_path
from wbc.serve.app import Limits, create_app
from wbc.serve.server import load_for_serving


@pytest.fixture(scope="module")
def served(wbc_cache):
    predictor, explainer = load_for_serving(None)  # engine auto: ONNX fp32 export in the (temporary) cache
    return predictor, explainer


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(*served, Limits(max_files=4, max_mb=1.0)))


def upload(paths):
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_serves_with_onnx_runtime_and_reports_the_model(client, served):
    m = client.get("/api/v1/model").json()
    assert m["engine"] == "onnx-fp32" and m["classes"] == sorted([*PBC_CLASSES, "BLAST"]) and m["explain"] is True
    assert m["file"] == "wbc_lite0.safetensors" and "kaggle_test" in m["metrics"] and m["sources"] == ["kaggle", "munich", "pbc"]
    assert m["metrics_measured"].startswith("when the model was trained")  # README has the figures of this wbc
    assert m["always_reviewed"] == {"NEUTROPHIL": [2, 6]}  # the ONNX session's file carries the rule with its evidence
    assert m["sha256"] == hashlib.sha256(shipped_model_path().read_bytes()).hexdigest()  # the file it was exported from
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    assert "/api/v1/classify" in client.get("/openapi.json").json()["paths"]


def test_every_response_carries_the_security_headers(client):
    """The pages run only their own script and styles and cannot be framed (a hidden sign-off click); nothing is
    sniffed as another type. FastAPI's /docs builds itself from inline script: it keeps all but the page policy."""
    for path in ("/", "/static/app.js", "/api/v1/model", "/healthz", "/no-such-page"):
        h = client.get(path).headers
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY", path
        csp = h["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
    docs = client.get("/docs").headers
    assert docs["x-frame-options"] == "DENY" and "content-security-policy" not in docs


def test_classify_real_cells_agrees_with_the_python_api(client, served):
    import wbc

    paths = [kaggle_images("TEST_SIMPLE", c, 1)[0] for c in CLASSES]
    r = client.post("/api/v1/classify", files=upload(paths))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    native = wbc.load_model().predict(paths)  # PyTorch: the ONNX engine must give the same answers
    assert [x["filename"] for x in results] == [p.name for p in paths]
    assert [x["class"] for x in results] == [p.label for p in native]
    for x, n in zip(results, native):
        assert abs(sum(x["probabilities"].values()) - 1) < 1e-4
        assert abs(x["probability"] - n.probability) < 1e-3
        assert isinstance(x["review"], bool) and "heatmap_png" not in x


def test_explain_returns_a_heatmap_png(client, served):
    path = kaggle_images("TEST_SIMPLE", "LYMPHOCYTE", 1)[0]
    r = client.post("/api/v1/classify?explain=true", files=upload([path]))
    assert r.status_code == 200, r.text
    url = r.json()["results"][0]["heatmap_png"]
    assert url.startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    h, w = served[0].spec.input_size
    assert im.format == "PNG" and im.size == (w, h)


@pytest.mark.parametrize("name,data,status,words", [
    ("notes.txt", b"not an image at all", 415, "not an image file"),
    ("empty.jpeg", b"", 415, "empty"),
    ("cut.jpeg", None, 415, "cut.jpeg"),
])
def test_bad_files_are_refused_by_name(client, name, data, status, words):
    if data is None:  # a real JPEG cut short
        data = kaggle_images("TEST", "MONOCYTE", 1)[0].read_bytes()[:2500]
    r = client.post("/api/v1/classify", files=[("files", (name, data, "application/octet-stream"))])
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and name in r.json()["detail"]


def test_request_limits(client, tmp_path):
    assert client.post("/api/v1/classify").status_code == 400
    five = kaggle_images("TEST", "EOSINOPHIL", 5)
    r = client.post("/api/v1/classify", files=upload(five))
    assert r.status_code == 413 and "at most 4" in r.json()["detail"]
    big = np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)  # noise: ~4 MB as PNG
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    r = client.post("/api/v1/classify", files=[("files", ("big.png", buf.getvalue(), "image/png"))])
    assert r.status_code == 413 and "big.png" in r.json()["detail"] and "1 MB" in r.json()["detail"]
    r = client.post("/api/v1/classify?explain=perhaps", files=upload(five[:1]))
    assert r.status_code == 422 and "explain" in r.json()["detail"]


def test_decompression_bomb_is_refused(client):
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, format="PNG")  # 64 Mpx of zeros: a few KB on the wire
    assert len(buf.getvalue()) < 1024 * 1024
    r = client.post("/api/v1/classify", files=[("files", ("bomb.png", buf.getvalue(), "image/png"))])
    assert r.status_code == 413 and "bomb.png" in r.json()["detail"] and "pixel limit" in r.json()["detail"]


def test_an_onnx_model_serves_but_refuses_heatmaps(served, tmp_path):
    from wbc.infer.predictor import load_model
    from wbc.models.export import cached_onnx

    onnx_only = load_model(cached_onnx(load_model()))
    c = TestClient(create_app(onnx_only, None))
    path = kaggle_images("TEST_SIMPLE", "NEUTROPHIL", 1)[0]
    assert c.post("/api/v1/classify", files=upload([path])).status_code == 200
    r = c.post("/api/v1/classify?explain=true", files=upload([path]))
    assert r.status_code == 409 and ".safetensors" in r.json()["detail"]
