"""Bounded load check for `wbc serve`: N concurrent clients send a fixed number of classify requests.

    wbc serve --port 8000 &
    python scripts/load_check.py --url http://127.0.0.1:8000 --clients 8 --requests 400

Prints requests/s, p50/p99 latency and the error count. A figure, not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import time
from pathlib import Path

import httpx
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/blood-cells/dataset2-master/images/TEST_SIMPLE")
    ap.add_argument("--per-request", type=int, default=1, help="images in each request")
    ap.add_argument("--explain", action="store_true", help="ask for Grad-CAM heat-maps too")
    a = ap.parse_args()
    files = sorted(p for p in a.images.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"error: no images under {a.images}: pass --images DIR")
    blobs = [(p.name, p.read_bytes()) for p in files]
    try:
        httpx.get(a.url + "/readyz", timeout=5).raise_for_status()
    except httpx.HTTPError as e:
        raise SystemExit(f"error: {a.url} is not a ready wbc server ({e}): start `wbc serve` first")

    def one(i: int) -> tuple[float, bool]:
        chosen = [blobs[(i * a.per_request + k) % len(blobs)] for k in range(a.per_request)]
        t = time.perf_counter()
        try:
            r = client.post(f"{a.url}/api/v1/classify", params={"explain": str(a.explain).lower()},
                            files=[("files", (n, d, "image/jpeg")) for n, d in chosen], timeout=300)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - t, ok

    with httpx.Client() as client, cf.ThreadPoolExecutor(a.clients) as ex:
        start = time.perf_counter()
        done = list(ex.map(one, range(a.requests)))
        wall = time.perf_counter() - start
    lat = np.array([d for d, _ in done]) * 1e3
    errors = sum(not ok for _, ok in done)
    print(f"{a.requests} requests ({a.per_request} image(s) each{', with heat-maps' if a.explain else ''}) from {a.clients} clients in {wall:.1f} s: "
          f"{a.requests / wall:.1f} requests/s, {a.requests * a.per_request / wall:.1f} images/s, "
          f"latency p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, errors {errors}")


if __name__ == "__main__":
    main()
