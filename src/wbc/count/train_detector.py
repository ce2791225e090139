"""`wbc train-detector`: the CenterNet cell detector on BCCD train, selected on val.

Read top to bottom: load the lists (fields at the detector's 7 px/um) -> find the cells the
annotators did not box (ignore regions) -> epochs of augmented crops -> validate (COCO-style
mAP@0.5 with torchmetrics) -> early stopping -> per-type score thresholds fitted on val -> save.

BCCD's boxes are incomplete: some fields have red cells, even a platelet, with no box. A detector
punished for finding them learns to miss cells. The classic detector (colour + Hough circles,
wbc.count.detect) proposes cells; each proposal no annotated box overlaps becomes an ignore
region: no penalty there, either way. A checkpoint is written after every epoch (`--resume`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wbc._util.io import atomic_save, atomic_write_text
from wbc._util.progress import or_null
from wbc._util.runs import epoch_number, keep_logged, open_run
from wbc.count.centernet import (
    CellDetector,
    DetectorSpec,
    PeakDetector,
    decode,
    detection_loss,
    targets,
)
from wbc.count.voc import Box, coco_ap, iou, read_boxes, read_ids
from wbc.image.decode import decode as decode_image

BCCD_PX_PER_UM = 14.0

log = logging.getLogger(__name__)


@dataclass
class DetectorConfig:
    data: str = ""  # Pascal VOC folder (BCCD)
    out: str = "runs/detector"
    train_list: str = "train"
    val_list: str = "val"
    crop: int = 256  # training crops, detector-scale pixels
    batch_size: int = 16
    epochs: int = 60
    crops_per_image: int = 2  # crops an epoch draws from each training field
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    ignore_unlabelled: bool = True
    photometric: str = "classifier"  # "classifier": the classifier's colour and stain augmentation plus colour casts; "stain": HED and brightness only (detectors of wbc <= 0.2)
    cast: float = 0.25  # colour casts, each channel's gain in 1 +- cast ("classifier" only)
    max_images: int = 0  # use at most this many fields a list (quick runs)
    pretrained: bool = True
    seed: int = 0
    workers: int = 0

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path) -> "DetectorConfig":
        d = json.loads(Path(path).read_text())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Field:
    name: str
    rgb: np.ndarray  # at the detector's scale
    boxes: list[tuple[int, float, float, float, float]]  # (class, x0, y0, x1, y1)
    ignore: list[tuple[int, float, float, float]]  # (class, cx, cy, radius)


def unlabelled_cells(rgb: np.ndarray, truth: list[Box]) -> list[Box]:
    """Cells the classic detector counts that no annotated box of the same type overlaps."""
    from wbc.count.detect import counted, detect

    return [c for c in counted(detect(rgb)) if all(iou(c, t) < 0.3 for t in truth if t.kind == c.kind)]


def load_fields(root: str, split: str, spec: DetectorSpec, ignore: bool, limit: int = 0, progress=None) -> list[Field]:
    ids = read_ids(root, split)
    ids = ids[:limit] if limit else ids
    f = spec.px_per_um / BCCD_PX_PER_UM
    out = []
    task = progress.add_task(f"loading BCCD {split}", total=len(ids)) if progress else None
    for i in ids:
        full = decode_image(Path(root) / "JPEGImages" / f"{i}.jpg")
        truth = [b for b in read_boxes(Path(root) / "Annotations" / f"{i}.xml") if b.kind in spec.classes]
        rgb = cv2.resize(full, (round(full.shape[1] * f), round(full.shape[0] * f)), interpolation=cv2.INTER_AREA)
        boxes = [(spec.classes.index(b.kind), b.x0 * f, b.y0 * f, b.x1 * f, b.y1 * f) for b in truth]
        extra = unlabelled_cells(full, truth) if ignore else []
        out.append(Field(i, rgb, boxes, [(spec.classes.index(b.kind), b.centre[0] * f, b.centre[1] * f,
                                           max(b.x1 - b.x0, b.y1 - b.y0) * f / 2) for b in extra]))
        if progress:
            progress.advance(task)
    return out


class CropDataset(Dataset):
    """Augmented square crops of training fields and their CenterNet targets: scale +-15%, any of the
    8 flips/right-angle turns, and the classifier's photometric augmentation with colour casts (so a cyan
    or yellow lab's red cells stay red cells), or (`photometric` "stain") HED and brightness/contrast only."""

    def __init__(self, fields: list[Field], crop: int, n_classes: int, per_image: int, photometric: str = "classifier", cast: float = 0.25):
        from wbc.data.augment import Augment

        self.fields, self.crop, self.n_classes, self.per_image = fields, crop, n_classes, per_image
        self.augment = Augment(cast=cast) if photometric == "classifier" else None

    def __len__(self) -> int:
        return len(self.fields) * self.per_image

    def __getitem__(self, i: int):
        from wbc.data.transforms import hed_jitter, photometric

        rng = random.Random(torch.randint(0, 2**31, (1,)).item())
        f = self.fields[i % len(self.fields)]
        s = rng.uniform(0.85, 1.15)
        rgb = cv2.resize(f.rgb, (round(f.rgb.shape[1] * s), round(f.rgb.shape[0] * s)), interpolation=cv2.INTER_LINEAR)
        h, w = rgb.shape[:2]
        c = self.crop
        x0, y0 = rng.randint(0, max(0, w - c)), rng.randint(0, max(0, h - c))
        tile = np.zeros((c, c, 3), np.uint8)
        tile[: min(c, h - y0), : min(c, w - x0)] = rgb[y0 : y0 + c, x0 : x0 + c]
        boxes = []
        for k, bx0, by0, bx1, by1 in f.boxes:
            bx0, by0, bx1, by1 = bx0 * s - x0, by0 * s - y0, bx1 * s - x0, by1 * s - y0
            cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
            if 0 <= cx < c and 0 <= cy < c:
                boxes.append([k, max(0, bx0), max(0, by0), min(c, bx1), min(c, by1)])
        ignore = [[k, cx * s - x0, cy * s - y0, r * s] for k, cx, cy, r in f.ignore]
        if rng.random() < 0.5:  # horizontal flip
            tile = tile[:, ::-1]
            boxes = [[k, c - b1, a0, c - b0, a1] for k, b0, a0, b1, a1 in boxes]
            ignore = [[k, c - cx, cy, r] for k, cx, cy, r in ignore]
        for _ in range(rng.randint(0, 3)):  # quarter turns (counter-clockwise): (x, y) -> (y, c - x)
            tile = np.rot90(tile)
            boxes = [[k, a0, c - b1, a1, c - b0] for k, b0, a0, b1, a1 in boxes]
            ignore = [[k, cy, c - cx, r] for k, cx, cy, r in ignore]
        t = targets([tuple(b) for b in boxes], [tuple(g) for g in ignore], (c, c), self.n_classes)
        t = {k: torch.from_numpy(v) for k, v in t.items()}
        if self.augment:
            return photometric(np.ascontiguousarray(tile), self.augment, rng), t
        tile = hed_jitter(np.ascontiguousarray(tile), 0.08, 0.015, rng)
        tile = np.clip(tile.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1))), t


@torch.no_grad()
def field_detections(model: CellDetector, fields: list[Field], spec: DetectorSpec) -> list[list[Box]]:
    peaks_net = PeakDetector(model).eval()
    out = []
    for f in fields:
        h, w = f.rgb.shape[:2]
        x = np.pad(f.rgb, ((0, -h % 32), (0, -w % 32), (0, 0)))
        peaks, size, offset = (t[0].numpy() for t in peaks_net(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]))
        out.append([Box(spec.classes[c], x0, y0, x1, y1, s) for c, s, x0, y0, x1, y1 in decode(peaks, size, offset, spec.max_objects, 0.01)])
    return out


def fit_thresholds(dets: list[list[Box]], truth: list[list[Box]], classes: list[str]) -> dict:
    """Per type, the score threshold that makes the validation count closest to the truth (ties: best F1)."""
    from wbc.count.voc import match

    out = {}
    for c in classes:
        best = (math.inf, -1.0, 0.3)
        for t in np.arange(0.05, 0.91, 0.025):
            err, tp, nd, nt = 0.0, 0, 0, 0
            for d, g in zip(dets, truth):
                kept = [b for b in d if b.kind == c and b.score >= t]
                gt = [b for b in g if b.kind == c]
                err += abs(len(kept) - len(gt))
                tp += sum(match(kept, gt))
                nd, nt = nd + len(kept), nt + len(gt)
            f1 = 2 * tp / max(1, nd + nt)
            if (err, -f1) < (best[0], -best[1]):
                best = (err, f1, float(round(t, 3)))
        out[c] = best[2]
    return out


def detector_epoch(model, dl: DataLoader, opt, sched) -> np.ndarray:
    """One epoch over random crops; the mean of (loss, heat, size, offset)."""
    model.train()
    losses = []
    for x, t in dl:
        loss, parts = detection_loss(model(x.float().contiguous(memory_format=torch.channels_last)), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append([loss.item(), parts["heat"], parts["size"], parts["offset"]])
    return np.mean(losses, 0)


METRIC_FIELDS = ["epoch", "loss", "heat", "size", "offset", "val_map50", "val_map50_95", "RBC_ap50", "WBC_ap50", "Platelets_ap50", "seconds"]


def _resume(run: Path, model, opt, resume: bool) -> tuple[dict, dict | None]:
    """(where training stands, the checkpoint or None); metrics rows past the checkpoint dropped."""
    state, ck = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad": 0}, None
    if resume:
        ck = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        log.info(f"resuming {run}: {state['epoch']} epochs done")
    metrics = run / "metrics.csv"
    if not metrics.exists():
        metrics.write_text(",".join(METRIC_FIELDS) + "\n")
    elif resume:
        keep_logged(metrics, lambda r: epoch_number(r["epoch"]) <= state["epoch"])
    return state, ck


def _finish(run: Path, cfg: DetectorConfig, spec: DetectorSpec, val: list[Field], val_truth, state: dict, train_info: dict) -> Path:
    """Score thresholds fitted on val for the best epoch's detector; the final file with its figures."""
    from wbc.count.detector import load_detector_file

    best, _ = load_detector_file(run / "detector.safetensors")
    dets = field_detections(best, val, spec)
    best.spec.score_threshold = fit_thresholds(dets, val_truth, spec.classes)
    ap = coco_ap(dets, val_truth, spec.classes)
    info = {"trained_on": train_info, "best_epoch": state["best_epoch"], "metrics": {"val": ap}, "config": asdict(cfg)}
    save_model_file(best, run / "detector.safetensors", info)
    atomic_write_text(run / "summary.json", json.dumps(info, indent=2))
    log.info(f"val mAP@0.5 {ap['map50']:.3f} (epoch {state['best_epoch']}); thresholds {best.spec.score_threshold}")
    log.info(f"detector written to {run / 'detector.safetensors'}")
    return run / "detector.safetensors"


def train_detector(cfg: DetectorConfig, resume: bool = False, progress=None) -> Path:
    """Crops of BCCD train fields -> CenterNet epochs, early stopping on val mAP@0.5 -> thresholds on val; resumable."""
    progress = or_null(progress)
    run, cfg = open_run(cfg.out, cfg, resume, DetectorConfig.load)
    cfg.save(run / "config.json")
    torch.manual_seed(cfg.seed)
    spec = DetectorSpec()
    model = CellDetector(spec, pretrained=cfg.pretrained and not resume).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state, ck = _resume(run, model, opt, resume)
    train = load_fields(cfg.data, cfg.train_list, spec, cfg.ignore_unlabelled, cfg.max_images, progress)
    val = load_fields(cfg.data, cfg.val_list, spec, False, cfg.max_images, progress)
    n_ignored = sum(len(f.ignore) for f in train)
    log.info(f"train {len(train)} fields ({sum(len(f.boxes) for f in train)} boxes, {n_ignored} unboxed cells ignored), val {len(val)} fields")
    val_truth = [[Box(spec.classes[k], *b) for k, *b in f.boxes] for f in val]
    dl = DataLoader(CropDataset(train, cfg.crop, len(spec.classes), cfg.crops_per_image, cfg.photometric, cfg.cast), batch_size=cfg.batch_size, shuffle=True,
                    num_workers=cfg.workers, drop_last=len(train) * cfg.crops_per_image > cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * len(dl)), pct_start=0.1)
    if ck and "scheduler" in ck:
        sched.load_state_dict(ck["scheduler"])
    task = progress.add_task("training detector", total=cfg.epochs, completed=state["epoch"])
    while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
        t0 = time.time()
        torch.manual_seed(cfg.seed * 1000 + state["epoch"])
        mean = detector_epoch(model, dl, opt, sched)
        model.eval()
        ap = coco_ap(field_detections(model, val, spec), val_truth, spec.classes)
        state["epoch"] += 1
        row = [state["epoch"], *mean, ap["map50"], ap["map50_95"], *[ap["per_type"].get(c, {}).get("ap50", float("nan")) for c in spec.classes],
               time.time() - t0]
        with open(run / "metrics.csv", "a", newline="") as fh:
            csv.writer(fh).writerow([f"{v:.5f}" if isinstance(v, float) else v for v in row])
        if ap["map50"] > state["best"]:
            state.update(best=ap["map50"], best_epoch=state["epoch"], bad=0)
            save_model_file(model, run / "detector.safetensors", {"partial": True})
        else:
            state["bad"] += 1
        atomic_save(run / "last.pt", lambda tmp: torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                              "scheduler": sched.state_dict(), "state": state}, tmp))
        progress.update(task, advance=1, description=f"detector val mAP@0.5 {ap['map50']:.3f} (loss {mean[0]:.3f})")
    train_info = {"data": cfg.data, "train": cfg.train_list, "fields": len(train), "ignored_unboxed_cells": n_ignored}
    return _finish(run, cfg, spec, val, val_truth, state, train_info)


def save_model_file(model, path, info) -> None:
    from wbc.count.detector import save_detector

    save_detector(model, path, info)
