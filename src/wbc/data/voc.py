"""Pascal VOC smear fields (BCCD): boxes, the split lists, and a check of every file the way `wbc data check` checks
a folder-per-class set: images that do not decode, annotations that do not parse or do not pair with an image, boxes
outside their image or of no area, and split lists that share a field (the test list must stay unseen)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from wbc.data.scan import IMAGE_EXTENSIONS, BadFile, check_images
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
        try:
            out.append(Box(o.findtext("name", "").strip(), *(float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
        except (AttributeError, TypeError, ValueError):
            raise WbcError(f"cannot read annotation {xml_path}: an object without a complete <bndbox> (xmin, ymin, xmax, ymax)") from None
    return out


def read_ids(root: str | Path, split: str) -> list[str]:
    f = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not f.is_file():
        lists = sorted(p.stem for p in f.parent.glob("*.txt")) if f.parent.is_dir() else []
        if lists:
            raise WbcError(f"{f} not found: pass --split as one of the lists there ({', '.join(lists)})")
        raise WbcError(f"{f} not found: --data must be a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{split}.txt)")
    return f.read_text().split()


@dataclass
class VocCheck:
    root: Path
    images: int = 0
    lists: dict[str, list[str]] = field(default_factory=dict)  # ImageSets/Main/<name>.txt: its ids
    boxes: dict[str, Counter] = field(default_factory=dict)  # list name (and "all") -> boxes per type
    bad: list[BadFile] = field(default_factory=list)  # files that cannot be used
    odd: list[BadFile] = field(default_factory=list)  # usable, but worth a look (a box out of its image, a type not in TYPES)
    overlaps: list[str] = field(default_factory=list)  # split lists that share fields


def check_voc(root: str | Path, progress=None) -> VocCheck:
    """Decode every image, parse every annotation, pair them, check each box against its image and the lists
    against each other."""
    root = Path(root)
    out = VocCheck(root)
    images = {p.stem: p for p in sorted((root / "JPEGImages").iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    notes = {p.stem: p for p in sorted((root / "Annotations").iterdir()) if p.suffix.lower() == ".xml"}
    sizes: dict[str, tuple[int, int]] = {}
    for (stem, path), (reason, size) in zip(images.items(), check_images(list(images.values()), progress, "checking fields")):
        if reason:
            out.bad.append(BadFile(path, reason))
        else:
            sizes[stem] = size
    out.images = len(sizes)
    boxes: dict[str, list[Box]] = {}
    for stem, path in notes.items():
        try:
            boxes[stem] = read_boxes(path)
        except WbcError as e:
            out.bad.append(BadFile(path, str(e).removeprefix(f"cannot read annotation {path}: ")))
    out.bad += [BadFile(images[s], f"no annotation (Annotations/{s}.xml): the field cannot be trained or scored") for s in images if s not in notes]
    out.bad += [BadFile(notes[s], "no image for this annotation in JPEGImages/") for s in notes if s not in images]
    for stem in sorted(set(boxes) & set(sizes)):
        out.odd += _odd_boxes(notes[stem], boxes[stem], sizes[stem])
    out.lists = {p.stem: p.read_text().split() for p in sorted((root / "ImageSets" / "Main").glob("*.txt"))}
    for name, ids in out.lists.items():
        missing = [i for i in ids if i not in sizes or i not in boxes]
        if missing:
            out.bad.append(BadFile(root / "ImageSets" / "Main" / f"{name}.txt",
                                   f"{len(missing)} listed field(s) without a readable image and annotation, e.g. {missing[0]}"))
    out.overlaps = _overlaps(out.lists)
    for name, ids in [("all", sorted(set(boxes) & set(sizes))), *out.lists.items()]:
        out.boxes[name] = Counter(b.kind for i in ids for b in boxes.get(i, []))
    return out


def _odd_boxes(note: Path, boxes: list[Box], size: tuple[int, int]) -> list[BadFile]:
    w, h = size
    odd = []
    for b in boxes:
        where = f"{b.kind} box ({b.x0:g}, {b.y0:g})-({b.x1:g}, {b.y1:g})"
        if b.kind not in TYPES:
            odd.append(BadFile(note, f"{where}: type '{b.kind}' is none of {', '.join(TYPES)} (not counted)"))
        elif b.x1 <= b.x0 or b.y1 <= b.y0:
            odd.append(BadFile(note, f"{where}: no area"))
        elif b.x0 < -1 or b.y0 < -1 or b.x1 > w + 1 or b.y1 > h + 1:
            odd.append(BadFile(note, f"{where}: beyond the {w}x{h} image"))
    seen = Counter((b.kind, b.x0, b.y0, b.x1, b.y1) for b in boxes)
    odd += [BadFile(note, f"{k[0]} box ({k[1]:g}, {k[2]:g})-({k[3]:g}, {k[4]:g}) given {n} times") for k, n in seen.items() if n > 1]
    return odd


def _overlaps(lists: dict[str, list[str]]) -> list[str]:
    """Pairs of lists sharing fields, but a union list with its parts (VOC's trainval = train + val)."""
    found = []
    names = sorted(lists)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = set(lists[a]) & set(lists[b])
            union_and_part = "trainval" in (a, b) and {a, b} - {"trainval"} <= {"train", "val"}
            if shared and not union_and_part:
                found.append(f"{a} and {b} share {len(shared)} field(s), e.g. {sorted(shared)[0]}")
    return found
