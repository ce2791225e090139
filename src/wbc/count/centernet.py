"""A learned cell detector: CenterNet (Zhou et al. 2019, "Objects as Points") on EfficientNet-Lite0.

Blood cells are round, of a few sizes, and rarely overlap much: a centre heat-map per type (RBC,
WBC, platelets) plus a width/height and a sub-pixel offset at each centre finds them with no anchor
boxes and no NMS beyond a 3x3 max-pool. The backbone's stride-4..32 features are merged top-down
(FPN-style) into one stride-4 map. Fields are first brought to `DETECT_PX_PER_UM` (BCCD's 640x480
halved), so a red cell is ~50 px across whatever the microscope.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wbc.count.voc import TYPES

DETECT_PX_PER_UM = 7.0
STRIDE = 4


@dataclass
class DetectorSpec:
    backbone: str = "tf_efficientnet_lite0"
    classes: list[str] = field(default_factory=lambda: list(TYPES))
    px_per_um: float = DETECT_PX_PER_UM  # the scale fields are resized to before detection
    neck: int = 64
    score_threshold: dict = field(default_factory=lambda: {t: 0.3 for t in TYPES})  # counted at or above (fitted on val)
    max_objects: int = 100  # per tile (COCO evaluation looks at the best 100 of a field too)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _head(cin: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    last = nn.Conv2d(cin, cout, 1)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU(inplace=True), last)


class CellDetector(nn.Module):
    """forward(uint8-range float N x 3 x H x W) -> (heat N x 3 x H/4 x W/4 in 0..1, size N x 2 x .., offset N x 2 x ..)."""

    def __init__(self, spec: DetectorSpec, pretrained: bool = True):
        super().__init__()
        self.spec = spec
        kw = {}
        if pretrained:
            from wbc.models.weights import OFFLINE_PACKAGES, offline_weights

            if spec.backbone in OFFLINE_PACKAGES:
                kw = {"pretrained": True, "pretrained_cfg_overlay": dict(file=str(offline_weights(spec.backbone)))}
        import timm  # here: its import is ~2 s, which a count on the detector's ONNX export never needs

        self.backbone = timm.create_model(spec.backbone, features_only=True, out_indices=(1, 2, 3, 4), **kw)
        chans = self.backbone.feature_info.channels()
        n = spec.neck
        self.lateral = nn.ModuleList(nn.Conv2d(c, n, 1) for c in chans)
        self.smooth = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), nn.BatchNorm2d(n), nn.ReLU(inplace=True))
        self.heat = _head(n, len(spec.classes), bias=-2.19)  # sigmoid(-2.19) = 0.1: the CenterNet prior
        self.size = _head(n, 2)
        self.offset = _head(n, 2)

    def forward(self, pixels: torch.Tensor):
        feats = self.backbone((pixels - 127.5) / 127.5)
        x = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            x = lat(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
        x = self.smooth(x)
        return torch.sigmoid(self.heat(x)).clamp(1e-4, 1 - 1e-4), self.size(x), self.offset(x)


class PeakDetector(nn.Module):
    """The exported graph: heat-map peaks (3x3 max-pool suppression) and the size/offset maps."""

    def __init__(self, net: CellDetector):
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor):
        heat, size, offset = self.net(pixels.float())
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()
        return peaks, size, offset


def decode(peaks: np.ndarray, size: np.ndarray, offset: np.ndarray, k: int, min_score: float = 0.05) -> list[tuple[int, float, float, float, float, float]]:
    """(class index, score, x0, y0, x1, y1) in input pixels for the k best peaks of one image (C x h x w maps)."""
    c, h, w = peaks.shape
    flat = peaks.reshape(-1)
    k = min(k, flat.size)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[flat[top] >= min_score]
    out = []
    for idx in top[np.argsort(-flat[top])]:
        cls, rem = divmod(int(idx), h * w)
        y, x = divmod(rem, w)
        cx, cy = (x + offset[0, y, x]) * STRIDE, (y + offset[1, y, x]) * STRIDE
        bw, bh = max(1.0, size[0, y, x] * STRIDE), max(1.0, size[1, y, x] * STRIDE)
        out.append((cls, float(flat[idx]), cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
    return out


# ---- training targets and loss ----------------------------------------------------------------------


def gaussian_radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre shift that keeps IoU >= min_overlap (the three-case bound)."""
    a1, b1, c1 = 1, h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return max(0.0, min(r1, r2, r3))


def draw_gaussian(heat: np.ndarray, cx: float, cy: float, radius: float) -> None:
    r = max(0, int(radius))
    sigma = (2 * r + 1) / 6
    ys, xs = np.ogrid[-r : r + 1, -r : r + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    x, y = int(cx), int(cy)
    h, w = heat.shape
    l, ri, t, b = min(x, r), min(w - x, r + 1), min(y, r), min(h - y, r + 1)
    if ri <= 0 or b <= 0 or l < 0 or t < 0:
        return
    np.maximum(heat[y - t : y + b, x - l : x + ri], g[r - t : r + b, r - l : r + ri], out=heat[y - t : y + b, x - l : x + ri])


def targets(boxes: list[tuple[int, float, float, float, float]], ignore: list[tuple[int, float, float, float]], shape: tuple[int, int],
            n_classes: int, max_objects: int = 256) -> dict[str, np.ndarray]:
    """Training targets at stride 4 for boxes (class, x0, y0, x1, y1) in input pixels; `ignore` (class, cx, cy, radius)
    marks cells that are there but not annotated: no penalty for finding them."""
    h, w = shape[0] // STRIDE, shape[1] // STRIDE
    heat = np.zeros((n_classes, h, w), np.float32)
    weight = np.ones((n_classes, h, w), np.float32)
    size = np.zeros((max_objects, 2), np.float32)
    offset = np.zeros((max_objects, 2), np.float32)
    index = np.zeros(max_objects, np.int64)
    mask = np.zeros(max_objects, np.float32)
    for k, (c, x0, y0, x1, y1) in enumerate(boxes[:max_objects]):
        bw, bh = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        if not (0 <= cx < w and 0 <= cy < h) or bw <= 0 or bh <= 0:
            continue
        draw_gaussian(heat[c], cx, cy, max(0.0, gaussian_radius(bh, bw)))
        size[k], offset[k] = (bw, bh), (cx - int(cx), cy - int(cy))
        index[k], mask[k] = int(cy) * w + int(cx), 1.0
    for c, cx, cy, r in ignore:
        x, y, rr = cx / STRIDE, cy / STRIDE, max(1.0, r / STRIDE)
        y0, y1, x0, x1 = int(max(0, y - rr)), int(min(h, y + rr + 1)), int(max(0, x - rr)), int(min(w, x + rr + 1))
        weight[c, y0:y1, x0:x1] = np.where(heat[c, y0:y1, x0:x1] > 0, weight[c, y0:y1, x0:x1], 0.0)
    return {"heat": heat, "weight": weight, "size": size, "offset": offset, "index": index, "mask": mask}


def focal_loss(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss; `weight` 0 switches off the negative term (ignore regions)."""
    pos = gt.eq(1).float()
    neg = (1 - pos) * weight
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def _gather(fmap: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """N x C x h x w, N x K -> N x K x C"""
    n, c = fmap.shape[:2]
    flat = fmap.view(n, c, -1).permute(0, 2, 1)
    return flat.gather(1, index.unsqueeze(2).expand(-1, -1, c))


def detection_loss(out, batch: dict) -> tuple[torch.Tensor, dict]:
    heat, size, offset = out
    lh = focal_loss(heat, batch["heat"], batch["weight"])
    m = batch["mask"].unsqueeze(2)
    n = m.sum().clamp(min=1)
    ls = (F.l1_loss(_gather(size, batch["index"]) * m, batch["size"] * m, reduction="sum")) / n
    lo = (F.l1_loss(_gather(offset, batch["index"]) * m, batch["offset"] * m, reduction="sum")) / n
    total = lh + 0.1 * ls + lo
    return total, {"heat": lh.item(), "size": ls.item(), "offset": lo.item()}
