"""Detection metrics against Pascal VOC boxes (BCCD): matching, COCO-style AP from torchmetrics."""

from __future__ import annotations

from wbc.data.voc import TYPES, Box, read_boxes, read_ids  # noqa: F401  (the files are read in wbc.data)


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


def coco_ap(dets: list[list[Box]], fields_truth: list[list[Box]], classes: list[str]) -> dict:
    """COCO-style AP (torchmetrics MeanAveragePrecision): AP@0.5 and AP@[.5:.95] per type."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=True)
    idx = {c: k for k, c in enumerate(classes)}

    def pack(bs: list[Box], scores: bool) -> dict:
        d = {"boxes": torch.tensor([[b.x0, b.y0, b.x1, b.y1] for b in bs], dtype=torch.float32).reshape(-1, 4),
             "labels": torch.tensor([idx[b.kind] for b in bs], dtype=torch.int64)}
        if scores:
            d["scores"] = torch.tensor([b.score for b in bs], dtype=torch.float32)
        return d

    preds, gts = [pack(d, True) for d in dets], [pack(t, False) for t in fields_truth]
    metric.update(preds, gts)
    r = metric.compute()
    m50 = MeanAveragePrecision(iou_type="bbox", class_metrics=True, iou_thresholds=[0.5])
    m50.update(preds, gts)  # AP@0.5 per class needs its own metric at that one threshold
    r50 = m50.compute()
    per = {classes[int(c)]: {"ap50": float(a50), "ap50_95": float(a)}
           for c, a50, a in zip(r["classes"].reshape(-1), r50["map_per_class"].reshape(-1), r["map_per_class"].reshape(-1))}
    return {"map50": float(r50["map"]), "map50_95": float(r["map"]), "per_type": per}
