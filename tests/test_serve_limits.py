"""Server limits on a real `wbc serve` process: a bounded queue that answers 503 + Retry-After, a
per-request time limit (504), a load past the bound where nothing is lost or mixed up, and a
graceful shutdown that finishes the requests in flight."""

import concurrent.futures as cf
import signal
import threading
import time

import httpx
import pytest
from conftest import CLASSES, kaggle_images, start_server

IMAGES = [p for c in CLASSES for p in kaggle_images("TEST_SIMPLE", c, 4)]  # 16 real cells


def _post(url: str, paths, explain: bool = True, timeout: float = 300):
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    return httpx.post(f"{url}/api/v1/classify?explain={str(explain).lower()}", files=files, timeout=timeout)


@pytest.fixture(scope="module")
def small_queue(wbc_cache, tmp_path_factory):
    proc, url = start_server(tmp_path_factory.mktemp("q") / "serve.log", wbc_cache, "--queue", "2", "--timeout", "120", "--engine", "pytorch")
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def test_load_past_the_queue_bound_loses_and_mixes_nothing(small_queue):
    pairs = [IMAGES[k : k + 2] for k in range(0, len(IMAGES), 2)]
    # each pair answered alone first, as the load sends it (ten or more cells in one request would be a run, framed
    # at the run's scale, and could be answered otherwise)
    expected = {r["filename"]: r["class"] for pair in pairs for r in _post(small_queue, pair, explain=False).json()["results"]}
    requests = pairs * 2  # 16 requests of 2 cells, heat-maps on (slow)
    busy = {"503": 0, "retry_after": set()}
    lock = threading.Lock()

    def client(paths):
        for _ in range(200):
            r = _post(small_queue, paths)
            if r.status_code != 503:
                return paths, r
            with lock:
                busy["503"] += 1
                busy["retry_after"].add(r.headers.get("retry-after"))
            time.sleep(float(r.headers.get("retry-after", "1")) / 4)
        raise AssertionError("never admitted")

    with cf.ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(client, requests))
    assert busy["503"] > 0 and busy["retry_after"] == {"1"}  # the bound was hit, and said when to come back
    for paths, r in answers:
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["filename"] for x in results] == [p.name for p in paths]  # each answer is its own request's
        assert all(x["class"] == expected[x["filename"]] and x["heatmap_png"].startswith("data:image/png") for x in results)


def test_a_request_over_the_time_limit_gets_504(wbc_cache, tmp_path):
    proc, url = start_server(tmp_path / "serve.log", wbc_cache, "--timeout", "0.3", "--engine", "pytorch")
    try:
        r = _post(url, IMAGES[:8], explain=True)
        assert r.status_code == 504 and "0.3 s" in r.json()["detail"]
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # the server lives on
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_sigterm_finishes_requests_in_flight(wbc_cache, tmp_path):
    proc, url = start_server(tmp_path / "serve.log", wbc_cache, "--engine", "pytorch")
    with cf.ThreadPoolExecutor(3) as ex:
        futures = [ex.submit(_post, url, IMAGES[4 * k : 4 * k + 4]) for k in range(3)]
        time.sleep(1.0)  # the requests are in flight (heat-maps take seconds)
        proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    assert all(r.status_code == 200 and len(r.json()["results"]) == 4 for r in answers)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)
