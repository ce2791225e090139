"""`wbc evaluate-count`: detection and counting against BCCD's VOC boxes, WBC class against labels.csv.

The WBC class check has a catch worth stating: the Kaggle TRAIN crops the cell model learnt from
are augmented copies of most of these same originals. Only the originals behind the Kaggle TEST
split (its TEST_SIMPLE folder) were never trained on, so the class accuracy is reported on all
single-label images and, apart, on those held-out originals (matched by pixels).
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from wbc.count.count import count_field
from wbc.count.detect import ClassicDetector
from wbc.count.voc import TYPES, Box, coco_ap, match, read_boxes, read_ids
from wbc.data.shifts import shifted_field
from wbc.errors import WbcError
from wbc.image.decode import decode
from wbc.infer.predictor import UNIDENTIFIED

ANCHORS = {"YOLOv5x AP@0.5 (public BCCD result)": {"WBC": 0.977, "overall": 0.923},
           "CST-YOLO AP@0.5 (public BCCD result)": {"WBC": 0.984, "overall": 0.927}}


def wbc_class_figures(wbc_pred: dict, ids: list[str], paths: dict, labels, test_simple, classes: list[str],
                      flagged: dict | None = None) -> dict:
    """Each field's largest WBC's class against labels.csv: all single-label fields, and the Kaggle TEST originals;
    with `flagged` (field -> that WBC flagged for review, or UNIDENTIFIED), the share left unflagged and how many of
    those are right (a field whose WBC was not found counts as unflagged and wrong, a silent miss, unless the field
    was said to lose cells: FieldCount.warnings)."""
    lab = read_labels(labels)
    held = held_out_ids(paths, test_simple)
    rows = [(i, lab[int(i.rsplit("_", 1)[-1])]) for i in ids if i.rsplit("_", 1)[-1].isdigit() and int(i.rsplit("_", 1)[-1]) in lab]
    rows = [(i, c) for i, c in rows if c in classes]

    def acc(sel):
        sel = list(sel)
        out = {"images": len(sel), "accuracy": float(np.mean([wbc_pred[i] == c for i, c in sel])) if sel else None,
               "no_wbc_found": sum(wbc_pred[i] is None for i, _ in sel)}
        if flagged is not None and sel:
            free = [(i, c) for i, c in sel if not flagged.get(i, False)]
            out |= {"unflagged": len(free) / len(sel), "unflagged_accuracy": float(np.mean([wbc_pred[i] == c for i, c in free])) if free else None}
        return out

    return {"all_single_label": acc(rows), "held_out_originals": acc((i, c) for i, c in rows if i in held),
            "note": "Kaggle TRAIN holds augmented copies of most BCCD originals; held_out_originals are the Kaggle TEST ones"}


def field_and_truth(path: Path, annotation: Path, shift: str):
    """(the field as counted: its path, or its shifted pixels; the true boxes at its size; the size factor)."""
    truth = read_boxes(annotation)
    if shift == "none":
        return path, truth, 1.0
    rgb, f = shifted_field(decode(path), shift)
    return rgb, [Box(b.kind, b.x0 * f, b.y0 * f, b.x1 * f, b.y1 * f) for b in truth], f


def add_phantoms(tally: dict, ghosts: list[dict]) -> None:
    tally["fields"] += bool(ghosts)
    tally["cells"] += len(ghosts)
    tally["unflagged"] += sum(not (w["review"] or w["class"] == UNIDENTIFIED) for w in ghosts)


def phantoms(wbcs: list[dict], truth: list[Box]) -> list[dict]:
    """The counted WBCs whose box centre lies inside no true WBC box."""
    def inside(w, t):
        cx, cy = (w["box"][0] + w["box"][2]) / 2, (w["box"][1] + w["box"][3]) / 2
        return t.x0 <= cx <= t.x1 and t.y0 <= cy <= t.y1

    return [w for w in wbcs if not any(inside(w, t) for t in truth)]


def read_labels(path: str | Path) -> dict[int, str]:
    """labels.csv of dataset-master: image index -> category, only rows naming exactly one cell type."""
    out = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                cat = (row.get("Category") or "").strip().upper()
                cats = {c.strip() for c in cat.split(",") if c.strip()}
                if len(cats) == 1 and "," not in cat and (row.get("Image") or "").strip().isdigit():
                    out[int(row["Image"])] = cats.pop()
    except (OSError, KeyError, csv.Error) as e:
        raise WbcError(f"cannot read {path} as dataset-master/labels.csv (columns Image, Category): {e}") from None
    return out


def _thumb(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)


def held_out_ids(field_paths: dict[str, Path], test_simple: Path | None) -> set[str]:
    """Fields that are the originals of Kaggle TEST (TEST_SIMPLE holds them at 320x240): a pixel match
    clearly better than the second best."""
    if not test_simple or not test_simple.is_dir():
        return set()
    originals = sorted(p for p in test_simple.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not originals:
        return set()
    ids = list(field_paths)
    fields = np.stack([_thumb(decode(field_paths[i])) for i in ids])
    out = set()
    for p in originals:
        d = ((fields - _thumb(decode(p))[None]) ** 2).mean(axis=(1, 2, 3))
        first, second = np.partition(d, 1)[:2] if len(d) > 1 else (d[0], np.inf)
        if first < 60 and first < 0.25 * second:
            out.add(ids[int(np.argmin(d))])
    return out


def evaluate_count(predictor, data: str | Path, split: str = "test", labels: str | Path | None = None,
                   test_simple: Path | None = None, progress=None, detector=None, px_per_um: float | None = None,
                   shift: str = "none") -> dict:
    """Detection AP (COCO-style, torchmetrics) per type, precision/recall and count error at the operating
    threshold, WBC class against labels.csv, fields/s; `detector` and `px_per_um` (None: measured per field,
    as `wbc count` does) as in count_field; `shift` shows every field as another lab's microscope might
    (wbc.data.shifts.FIELD_SHIFTS; the truth boxes follow a change of size). `phantom_wbc`: counted WBCs whose
    centre lies in no true WBC box (a red cell or debris called a white cell), and how many went unflagged."""
    root = Path(data)
    detector = ClassicDetector() if detector in (None, "classic") else detector
    ids = read_ids(root, split)
    paths = {i: root / "JPEGImages" / f"{i}.jpg" for i in ids}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise WbcError(f"{len(missing)} image(s) of the {split} list are missing, e.g. {missing[0]}")
    n_truth = defaultdict(int)
    all_candidates, all_truth = [], []
    tp_counted, n_counted, count_err = defaultdict(int), defaultdict(int), defaultdict(list)
    wbc_pred: dict[str, str | None] = {}
    wbc_flagged: dict[str, bool] = {}
    task = progress.add_task(f"counting BCCD {split}", total=len(ids)) if progress else None
    seconds = 0.0
    phantom = {"fields": 0, "cells": 0, "unflagged": 0}
    warned = 0  # fields said not to be trusted as a whole (FieldCount.warnings)
    for i in ids:
        source, truth, f = field_and_truth(paths[i], root / "Annotations" / f"{i}.xml", shift)
        t = time.perf_counter()
        fc = count_field(predictor, source, px_per_um * f if px_per_um else None, detector=detector)
        seconds += time.perf_counter() - t
        add_phantoms(phantom, phantoms(fc.wbc, [b for b in truth if b.kind == "WBC"]))
        warned += bool(fc.warnings)
        all_candidates.append([b for b in fc.candidates if b.kind in TYPES])
        all_truth.append([b for b in truth if b.kind in TYPES])
        for k in TYPES:
            tr = [b for b in truth if b.kind == k]
            kept = [b for b in fc.boxes if b.kind == k]
            n_truth[k] += len(tr)
            tp_counted[k] += sum(match(kept, tr))
            n_counted[k] += len(kept)
            count_err[k].append(len(kept) - len(tr))
        biggest = max(fc.wbc, key=lambda w: (w["box"][2] - w["box"][0]) * (w["box"][3] - w["box"][1]), default=None)
        wbc_pred[i] = biggest["class"] if biggest else None
        wbc_flagged[i] = bool(fc.warnings) or bool(biggest and (biggest["review"] or biggest["class"] == UNIDENTIFIED))
        if progress:
            progress.advance(task)
    ap = coco_ap(all_candidates, all_truth, list(TYPES))
    det = {}
    for k in TYPES:
        det[k] = {"truth_boxes": n_truth[k], "counted": n_counted[k],
                  "precision": tp_counted[k] / n_counted[k] if n_counted[k] else 0.0,
                  "recall": tp_counted[k] / n_truth[k] if n_truth[k] else 0.0,
                  "ap50": ap["per_type"].get(k, {}).get("ap50", float("nan")), "ap50_95": ap["per_type"].get(k, {}).get("ap50_95", float("nan")),
                  "count_mae": float(np.mean(np.abs(count_err[k]))), "count_bias": float(np.mean(count_err[k]))}
    name = detector.name if detector.engine is None else f"learned ({detector.path.name}, {detector.engine})"
    result = {"split": split, "shift": shift, "images": len(ids), "detector": name, "px_per_um": px_per_um or "measured per field",
              "phantom_wbc": phantom, "warned_fields": warned, "seconds_per_image": seconds / len(ids), "detection": det,
              "map50": ap["map50"], "map50_95": ap["map50_95"], "anchors": ANCHORS}
    if labels:
        result["wbc_class"] = wbc_class_figures(wbc_pred, ids, paths, labels, test_simple, predictor.classes, wbc_flagged)
    return result
