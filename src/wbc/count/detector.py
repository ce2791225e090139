"""The learned detector as a file and an engine: load, run on fields of any size (tiled), export to ONNX.

A field is brought to the detector's scale (7 px/um) and cut into overlapping tiles; each tile's
detections are kept only where their centre lies in the tile's own core (the overlap split in
half between neighbours), so a cell on a seam is counted once, and memory is bounded by the tile,
not the field. The model file is one safetensors file with JSON metadata (format wbc-detector/1),
as the classifier's; `.onnx` exports run on ONNX Runtime with the same decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from wbc._util.io import atomic_save
from wbc.count.centernet import CellDetector, DetectorSpec, PeakDetector, decode
from wbc.count.detect import ClassicDetector
from wbc.count.voc import Box
from wbc.errors import WbcError
from wbc.models.files import (
    SHIPPED_DETECTOR,
    TRAIN_DETECTOR,
    asset_path,
    require_detector,
    require_onnx_out,
)
from wbc.models.io import (
    add_onnx_metadata,
    cached_export,
    file_metadata,
    load_weights,
    save_weights,
)

FORMAT = "wbc-detector/1"
ONNX_FORMAT = "wbc-detector-onnx/1"
COUNT_MAX_PIXELS = 200_000_000  # the learned detector tiles; this bounds the decoded image (600 MB of RGB)
TILE = 768  # work-scale pixels (110 um); a multiple of 32
OVERLAP = 160  # more than the largest cell (a WBC is ~130 px at 7 px/um)


def shipped_detector_path() -> Path:
    return asset_path(SHIPPED_DETECTOR)


def save_detector(model: CellDetector, path, info: dict | None = None) -> None:
    save_weights(model, path, FORMAT, model.spec.to_dict(), info)


def load_detector_file(path) -> tuple[CellDetector, dict]:
    meta = detector_metadata(path)
    try:
        model = load_weights(CellDetector(DetectorSpec.from_dict(meta["spec"]), pretrained=False), path)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise _unreadable(path, e) from None
    return model.eval(), meta


def detector_metadata(path) -> dict:
    """A native detector file's spec, info and version, without building the network (its ONNX export runs it)."""
    meta = file_metadata(path, FORMAT, "detector", TRAIN_DETECTOR)
    try:
        spec = DetectorSpec.from_dict(meta["spec"])
    except (ValueError, KeyError, TypeError) as e:
        raise _unreadable(path, e) from None
    return {"spec": spec.to_dict(), "info": meta["info"], "wbc_version": meta["wbc_version"]}


def _unreadable(path, e: Exception) -> WbcError:
    return WbcError(f"{path} is not a readable wbc detector ({str(e).splitlines()[0][:120]}); re-train or re-download it")


class Detector:
    """boxes(rgb at the detector's scale) -> [Box]; PyTorch or ONNX Runtime underneath."""

    def __init__(self, path, threads: int | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() == ".onnx":
            import onnxruntime as ort

            from wbc.infer.engines import session_options

            try:
                self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=["CPUExecutionProvider"])
            except Exception as e:
                raise WbcError(f"{self.path} is not a readable ONNX detector ({str(e).splitlines()[0][:120]})") from None
            props = self.session.get_modelmeta().custom_metadata_map
            if props.get("format") != ONNX_FORMAT:
                raise WbcError(f"{self.path} is an ONNX model but not a wbc detector")
            self.meta = {"spec": json.loads(props["spec"]), "info": json.loads(props.get("info", "{}"))}
            self.model, self.engine = None, "onnx"
        else:
            self.model, self.meta = load_detector_file(self.path)
            self.peaks = PeakDetector(self.model).eval()
            self.engine = "pytorch"
        self.spec = DetectorSpec.from_dict(self.meta["spec"])

    max_pixels = COUNT_MAX_PIXELS  # tiled: any field size, bounded by the decoded image

    @property
    def name(self) -> str:
        return f"learned ({self.path.name})"

    @property
    def px_per_um(self) -> float:
        """The scale it works at (a field is brought to it first)."""
        return self.spec.px_per_um

    @torch.no_grad()
    def heads(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(tile.transpose(2, 0, 1)[None])
        if self.model is None:
            return tuple(a[0] for a in self.session.run(None, {"pixels": x}))
        return tuple(t[0].numpy() for t in self.peaks(torch.from_numpy(x)))

    def tile_boxes(self, tile: np.ndarray) -> list[Box]:
        h, w = tile.shape[:2]
        ph, pw = -h % 32, -w % 32  # the backbone wants sides divisible by 32
        if ph or pw:
            tile = np.pad(tile, ((0, ph), (0, pw), (0, 0)))
        peaks, size, offset = self.heads(tile)
        out = []
        for c, score, x0, y0, x1, y1 in decode(peaks, size, offset, self.spec.max_objects):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if cx < w and cy < h:
                out.append(Box(self.spec.classes[c], max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1), score))
        return out

    def boxes(self, rgb: np.ndarray, tile: int = TILE, overlap: int = OVERLAP) -> list[Box]:
        """Every candidate in a field at the detector's scale, tiled when larger than one tile."""
        h, w = rgb.shape[:2]
        if h <= tile and w <= tile:
            return self.tile_boxes(rgb)
        step = tile - overlap
        out = []
        for y0 in range(0, max(1, h - overlap), step):
            for x0 in range(0, max(1, w - overlap), step):
                x1, y1 = min(w, x0 + tile), min(h, y0 + tile)
                # the tile's core: its share of each overlap (half), the field's edge where it has none
                cx0 = x0 + overlap / 2 if x0 > 0 else 0
                cy0 = y0 + overlap / 2 if y0 > 0 else 0
                cx1 = x1 - overlap / 2 if x1 < w else w
                cy1 = y1 - overlap / 2 if y1 < h else h
                for b in self.tile_boxes(rgb[y0:y1, x0:x1]):
                    mx, my = b.centre[0] + x0, b.centre[1] + y0
                    if cx0 <= mx < cx1 and cy0 <= my < cy1:
                        out.append(Box(b.kind, b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, b.score))
        return out

    def counted(self, boxes: list[Box]) -> list[Box]:
        return [b for b in boxes if b.score >= self.spec.score_threshold.get(b.kind, 0.3)]


SAME_CELL_IOU = 0.5  # two white-cell boxes overlapping this much are one cell seen twice (BCCD val: such pairs 0.71 and 0.84,
# every other pair of counted white cells 0)


def one_per_cell(boxes: list[Box], kinds: tuple[str, ...] = ("WBC",)) -> list[Box]:
    """`boxes` with each box of `kinds` that overlaps a better-scored one of its type by more than `SAME_CELL_IOU`
    dropped. CenterNet keeps every local peak (a 3x3 max-pool, no NMS), and a big lobed white cell can raise two
    peaks a few pixels apart: counted twice, it doubles in the differential (BCCD val: 2 of 87 fields). `wbc count`
    applies it after `crowded` has read the detector's own calls, which that rule was chosen on."""
    from torchvision.ops import nms

    dropped: set[int] = set()
    for kind in kinds:
        mine = [i for i, b in enumerate(boxes) if b.kind == kind]
        if len(mine) > 1:
            xyxy = torch.tensor([[boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1] for i in mine], dtype=torch.float32)
            kept = set(nms(xyxy, torch.tensor([boxes[i].score for i in mine], dtype=torch.float32), SAME_CELL_IOU).tolist())
            dropped |= {i for k, i in enumerate(mine) if k not in kept}
    return [b for i, b in enumerate(boxes) if i not in dropped]


def export_detector(path, out, size: tuple[int, int] = (480, 640), opset: int = 17) -> Path:
    """The detector (uint8 pixels in; peaks, sizes, offsets out; any tile size) as ONNX, metadata inside."""
    import warnings

    out = require_onnx_out(out)
    model, meta = load_detector_file(path)
    example = torch.zeros(1, 3, *size, dtype=torch.uint8)

    def write(tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(PeakDetector(model).eval(), (example,), tmp, input_names=["pixels"], output_names=["peaks", "size", "offset"],
                              dynamic_axes={"pixels": {0: "batch", 2: "height", 3: "width"}, "peaks": {0: "batch", 2: "h", 3: "w"},
                                            "size": {0: "batch", 2: "h", 3: "w"}, "offset": {0: "batch", 2: "h", 3: "w"}},
                              opset_version=opset, dynamo=False)
        add_onnx_metadata(tmp, ONNX_FORMAT, meta)

    atomic_save(out, write)
    return out


def cached_detector_onnx(path: Path) -> Path:
    """An ONNX export of a native detector file, made once into the wbc cache (keyed by its hash)."""
    return cached_export(path, lambda out: export_detector(path, out))


def load_detector(path=None, engine: str = "auto", threads: int | None = None) -> Detector:
    """The shipped detector (or `path`); auto: on ONNX Runtime when it is installed."""
    require_detector(path)
    p = Path(path) if path else shipped_detector_path()
    if engine == "pytorch" or p.suffix.lower() == ".onnx":
        return Detector(p, threads)
    try:
        import onnxruntime  # noqa: F401

        fast = Detector(cached_detector_onnx(p), threads)
        fast.path, fast.meta = p, detector_metadata(p)
        return fast
    except ImportError:
        return Detector(p, threads)



def default_detector(choice: str | None = None, threads: int | None = None):
    """The classic detector ("classic"), a detector file, or (None) the shipped learned detector when this install has one."""
    if choice == "classic":
        return ClassicDetector()
    if choice not in (None, "", "learned"):
        return load_detector(choice, threads=threads)
    if shipped_detector_path().is_file():
        return load_detector(None, threads=threads)
    if choice == "learned":
        raise WbcError(f"no learned detector in this install ({shipped_detector_path()}): pass --detector FILE or --detector classic")
    return ClassicDetector()
