"""A learned ruler, measured (issue 15's lead; not used by wbc): can a small network tell an image's pixels a
micrometre from a thumbnail, fast enough to replace the red-cell circles in a folder run (under about 1 ms)?

Each source is one microscope, so its images share one scale (its median red-cell estimate over 60 train images).
Training views are square crops of 45-100% of a train image's short side, resized to a 96x96 green-channel
thumbnail: the thumbnail's pixels a micrometre are the source's scale x 96 / crop side, so cropping tighter is
a higher magnification. Measured on validation images (never trained on) of the three sources and BCCD val
fields: the spread within a source at the whole view (one microscope: lower is better; the circles' own spread
beside it), whether a 2x and 1.4x zoom is read as such, and the time an image.

    python scripts/learned_ruler.py --out reports/learned_ruler.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

from wbc.image.decode import decode
from wbc.image.scale import estimate_scale, source_scale

DATA = Path("../shared/data")
SOURCES = {"kaggle": (DATA / "blood-cells/dataset2-master/images", "src/wbc/assets/split_manifest.csv"),
           "pbc": (DATA / "pbc", "src/wbc/assets/split_pbc.csv"), "munich": (DATA / "munich-aml", "src/wbc/assets/split_munich.csv")}
THUMB = 96


def rows(source: str, split: str, n: int, rng) -> list[Path]:
    root, manifest = SOURCES[source]
    paths = [root / r["path"] for r in csv.DictReader(open(manifest)) if r["split"] == split]
    return [paths[i] for i in sorted(rng.choice(len(paths), min(n, len(paths)), replace=False))]


def thumb(rgb: np.ndarray, c: float, rng=None) -> tuple[np.ndarray, float]:
    """(96x96 green thumbnail of a square crop c x the short side, at a random place or the centre; the crop's side)."""
    h, w = rgb.shape[:2]
    side = max(8, int(round(c * min(h, w))))
    x0 = int(rng.integers(0, w - side + 1)) if rng is not None else (w - side) // 2
    y0 = int(rng.integers(0, h - side + 1)) if rng is not None else (h - side) // 2
    g = np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side, 1])
    return cv2.resize(g, (THUMB, THUMB), interpolation=cv2.INTER_AREA), side


class Ruler(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for cout in (16, 32, 48, 64, 64):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(cin, 1)

    def forward(self, x):
        return self.out(self.features(x).mean((2, 3))).squeeze(1)


def batch(thumbs: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(thumbs)).float()[:, None] / 255.0
    return (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-3)  # the lab's brightness taken out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/learned_ruler.json")
    ap.add_argument("--per-source", type=int, default=900)
    ap.add_argument("--epochs", type=int, default=12)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    scale = {s: source_scale(rows(s, "train", 60, rng), 60)["px_per_um"] for s in SOURCES}
    print("source scales", scale, flush=True)
    xs, ys = [], []
    for s in SOURCES:
        for p in rows(s, "train", a.per_source, rng):
            rgb = decode(p)
            for _ in range(4):
                t, side = thumb(rgb, float(rng.uniform(0.45, 1.0)), rng)
                xs.append(t[:, ::-1] if rng.random() < 0.5 else t)
                ys.append(np.log(scale[s] * THUMB / side))
    y = torch.tensor(ys, dtype=torch.float32)
    mean = float(y.mean())
    net = Ruler()
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=a.epochs * (len(xs) // 64 + 1))
    t0 = time.time()
    for epoch in range(a.epochs):
        net.train()
        perm, losses = rng.permutation(len(xs)), []
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.smooth_l1_loss(net(batch([np.ascontiguousarray(xs[j]) for j in idx])) + mean, y[idx], beta=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        print(f"epoch {epoch + 1} loss {np.mean(losses):.4f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    report = {"source_scales": scale, "train_views": len(xs), "train_seconds": time.time() - t0, "sets": {}}
    val = {s: rows(s, "val", 150, rng) for s in SOURCES}
    bccd_ids = (DATA / "bccd/ImageSets/Main/val.txt").read_text().split()[:40]
    val["bccd"] = [DATA / "bccd/JPEGImages" / f"{i}.jpg" for i in bccd_ids]
    scale["bccd"] = source_scale(val["bccd"], 40)["px_per_um"]
    for s, paths in val.items():
        imgs = [decode(p) for p in paths]
        out = {}
        for c in (1.0, 0.7, 0.5):
            ts, sides = zip(*(thumb(im, c) for im in imgs))
            with torch.no_grad():
                pred = np.exp(net(batch(list(ts))).numpy() + mean) * np.array(sides) / THUMB  # back to the image's px/um
            ratio = pred / scale[s]  # at c < 1 the image's own scale is still scale[s]: the crop only zooms the thumbnail
            out[f"crop_{c}"] = {"median_ratio": float(np.median(ratio)), "p5": float(np.percentile(ratio, 5)), "p95": float(np.percentile(ratio, 95))}
        circles = np.array([v for v in (estimate_scale(im).px_per_um for im in imgs) if v]) / scale[s]
        out["circles"] = {"found": int(len(circles)), "median_ratio": float(np.median(circles)), "p5": float(np.percentile(circles, 5)),
                          "p95": float(np.percentile(circles, 95))}
        report["sets"][s] = out
        print(s, json.dumps(out), flush=True)
    im = decode(val["kaggle"][0])
    t0 = time.perf_counter()
    for _ in range(200):
        with torch.no_grad():
            net(batch([thumb(im, 1.0)[0]]))
    report["ms_per_image_batch1_torch"] = (time.perf_counter() - t0) / 200 * 1e3
    print("ms an image (thumbnail + network, batch 1, PyTorch)", report["ms_per_image_batch1_torch"])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
