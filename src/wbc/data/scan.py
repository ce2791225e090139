"""Walk a folder-per-class image set, check every file, and report the bad ones.

Layouts understood (class names are matched case-insensitively and upper-cased):
  * the Kaggle "blood-cells" download: ``dataset2-master/images/<SPLIT>/<CLASS>/*.jpeg``
  * any ``<split>/<class>/<image>`` tree
  * a plain ``<class>/<image>`` tree (one split, named ``ALL``)
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from wbc.errors import WbcError
from wbc.image.decode import MAX_PIXELS, MIN_SIDE, several_images

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
KAGGLE_SUBDIR = Path("dataset2-master") / "images"


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    split: str
    label: str


@dataclass(frozen=True)
class BadFile:
    path: Path
    reason: str


@dataclass
class Scan:
    root: Path
    records: list[ImageRecord] = field(default_factory=list)
    bad: list[BadFile] = field(default_factory=list)
    odd_size: list[BadFile] = field(default_factory=list)  # usable, but not the usual size

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records})

    @property
    def classes(self) -> list[str]:
        return sorted({r.label for r in self.records})

    def counts(self) -> dict[str, Counter]:
        out: dict[str, Counter] = defaultdict(Counter)
        for r in self.records:
            out[r.split][r.label] += 1
        return dict(out)

    def split(self, name: str) -> list[ImageRecord]:
        rows = [r for r in self.records if r.split == name.upper()]
        if not rows:
            raise no_split(name, self.root, self.splits)
        return rows


def no_split(name: str, root: Path, have: list[str]) -> WbcError:
    return WbcError(f"split '{name}' not found under {root}: it has {', '.join(have) or 'no images'}")


def require_splits(root: str | os.PathLike, names: list[str]) -> None:
    """Each of `names` is a split of the dataset at `root`: said from its folders, before its images are checked."""
    base, splits = find_layout(root)
    for name in names:
        if name.upper() not in splits:
            raise no_split(name, base, sorted(splits))


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _has_images(d: Path) -> bool:
    return any(f.is_file() and _is_image_name(f) for f in d.iterdir())


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_voc(root: str | os.PathLike) -> bool:
    """A Pascal VOC folder of smear fields (BCCD): Annotations/ and JPEGImages/."""
    return (Path(root) / "Annotations").is_dir() and (Path(root) / "JPEGImages").is_dir()


def find_layout(root: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """Return (dataset root, {SPLIT: folder holding class folders}) or raise a WbcError."""
    root = Path(root).expanduser()
    if not root.exists():
        raise WbcError(f"data folder not found: {root} (pass --data DIR or set WBC_DATA)")
    if not root.is_dir():
        raise WbcError(f"{root} is a file, not a folder of images (pass the dataset folder)")
    if is_voc(root):
        raise WbcError(f"{root} is a Pascal VOC set of smear fields (Annotations/, JPEGImages/), not cell images in class "
                       f"folders: `wbc data check {root}` checks it, `wbc evaluate-count --data {root}` scores counting on it")
    for base in (root / KAGGLE_SUBDIR, root / "images", root):
        if not base.is_dir():
            continue
        subs = _subdirs(base)
        # <split>/<class>/<images>
        splits = {s.name.upper(): s for s in subs if any(_has_images(c) for c in _subdirs(s))}
        if splits:
            return base, splits
        # <class>/<images>
        if any(_has_images(s) for s in subs):
            return base, {"ALL": base}
    raise WbcError(
        f"no class folders with images under {root}: expected <class>/<image> or "
        f"<split>/<class>/<image> (e.g. the Kaggle dataset2-master/images/TRAIN/EOSINOPHIL/...)"
    )


def check_image(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """Fully decode one file; return (reason it is bad or None, (width, height))."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)", None
        with Image.open(path) as im:
            size = im.size
            if size[0] * size[1] > MAX_PIXELS:
                return f"image too large ({size[0]}x{size[1]} pixels, limit {MAX_PIXELS:,})", size
            if min(size) < MIN_SIDE:
                return f"image too small ({size[0]}x{size[1]}, need >= {MIN_SIDE} px a side)", size
            if stack := several_images(im):
                return f"{stack} images of one size in one file (a stack, a series or an animation): save each as its own file", size
            im.load()  # decodes every pixel: finds truncated files
        return None, size
    except UnidentifiedImageError:
        return "not an image (cannot be decoded)", None
    except Image.DecompressionBombError as e:
        return f"image too large ({e})", None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # EOFError: a multi-frame file cut short
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg.lower():
            return f"truncated image ({msg})", None
        return f"unreadable image ({msg})", None


def check_images(paths: list[Path], progress=None, what: str = "checking images") -> Iterator[tuple[str | None, tuple[int, int] | None]]:
    """check_image of each file, in order, decoded on a few threads (a progress task advanced as each is done)."""
    task = progress.add_task(what, total=len(paths)) if progress else None
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        for checked in pool.map(check_image, paths):
            yield checked
            if progress:
                progress.advance(task)


def scan(root: str | os.PathLike, check: bool = True, progress=None) -> Scan:
    """Walk the dataset and (optionally) decode every image, sorting good from bad."""
    base, splits = find_layout(root)
    result = Scan(root=base)
    candidates: list[ImageRecord] = []
    for split, split_dir in sorted(splits.items()):
        class_dirs = _subdirs(split_dir)
        for cdir in class_dirs:
            for f in sorted(cdir.iterdir()):
                if f.name.startswith(".") or f.is_dir():
                    continue
                if not _is_image_name(f):
                    result.bad.append(BadFile(f, f"not an image file (extension '{f.suffix or 'none'}')"))
                    continue
                candidates.append(ImageRecord(f, split, cdir.name.upper()))
    if not check:
        result.records = candidates
        return result

    sizes: dict[Path, tuple[int, int]] = {}
    for rec, (reason, size) in zip(candidates, check_images([r.path for r in candidates], progress)):
        if reason:
            result.bad.append(BadFile(rec.path, reason))
        else:
            result.records.append(rec)
            sizes[rec.path] = size
    if sizes:
        usual, _ = Counter(sizes.values()).most_common(1)[0]
        result.odd_size = [
            BadFile(p, f"size {s[0]}x{s[1]} differs from the usual {usual[0]}x{usual[1]} (used, rescaled)")
            for p, s in sizes.items()
            if s != usual
        ]
    return result
