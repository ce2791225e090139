"""Pascal VOC boxes (BCCD) and the detection metrics computed against them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wbc.errors import WbcError

TYPES = ("RBC", "WBC", "Platelets")


@dataclass
class Box:
    kind: str  # RBC | WBC | Platelets
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    nucleus: tuple[float, float] | None = None  # WBC: centre of the stained nucleus, where the classifier's view is cut

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


def read_boxes(xml_path: str | Path) -> list[Box]:
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise WbcError(f"cannot read annotation {xml_path}: {e}") from None
    out = []
    for o in root.findall("object"):
        b = o.find("bndbox")
        out.append(Box(o.findtext("name", "").strip(), *(float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return out


def read_ids(root: str | Path, split: str) -> list[str]:
    f = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not f.is_file():
        raise WbcError(f"{f} not found: --data must be a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{split}.txt)")
    return f.read_text().split()


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def match(dets: list[Box], truth: list[Box], thr: float = 0.5) -> list[bool]:
    """Greedy VOC matching, highest score first: True where a detection finds a not-yet-found box."""
    used = [False] * len(truth)
    hits = [False] * len(dets)
    for i in sorted(range(len(dets)), key=lambda i: -dets[i].score):
        best, j_best = thr, -1
        for j, t in enumerate(truth):
            if not used[j]:
                v = iou(dets[i], t)
                if v >= best:
                    best, j_best = v, j
        if j_best >= 0:
            used[j_best], hits[i] = True, True
    return hits


def average_precision(scores: list[float], hits: list[bool], n_truth: int) -> float:
    """VOC all-point interpolated AP (area under the precision envelope)."""
    if n_truth == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, float))
    tp = np.cumsum(np.asarray(hits, float)[order])
    fp = np.cumsum(1 - np.asarray(hits, float)[order])
    recall = np.concatenate([[0], tp / n_truth, [1]])
    precision = np.concatenate([[1], tp / np.maximum(tp + fp, 1e-9), [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))
