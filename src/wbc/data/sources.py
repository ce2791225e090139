"""Training data from several sources (labs, microscopes): one split rule each, one pool of rows.

A source is a named folder-per-class image set (`kaggle=DIR`, `pbc=DIR`). Each gets its own
leakage-free split manifest (wbc.data.split: copies of one source image, found from the pixels,
stay on one side; a given manifest is used as is), its own measured scale (pixels a micrometre,
from its red cells), and its own class counts. The class set of a model is the union; a source
simply has no examples of the classes it lacks. `balanced_weights` samples so that every source
gets an equal share and, within a source, every class does (or, `pair`, every source's class alike).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from wbc._util.io import atomic_save, atomic_write_text
from wbc.data.scan import find_layout, scan
from wbc.data.split import make_manifest, manifest_hash, read_manifest, write_manifest
from wbc.errors import WbcError


@dataclass
class Source:
    name: str
    root: str
    manifest: str = ""  # a given split manifest; made in the run folder when empty


@dataclass
class Row:
    path: str
    label: str
    group: str
    split: str  # train | val | test | ... (as in the manifest)
    source: str


@dataclass
class SourceInfo:
    name: str
    root: str
    manifest: str
    manifest_sha256: str
    px_per_um: float
    scale: dict = field(default_factory=dict)  # the per-image spread (wbc.image.scale.source_scale)
    counts: dict = field(default_factory=dict)  # {split: {class: images}}
    groups: dict = field(default_factory=dict)  # {split: source groups}


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            name, value = "", item
        elif not name or not value:
            raise WbcError(f"{what} '{item}': write NAME=PATH (e.g. kaggle=../shared/data/blood-cells)")
        out.append((name.strip(), value.strip()))
    return out


def parse_sources(data: list[str], manifests: list[str] | None = None) -> list[Source]:
    """`--data [NAME=]DIR` (repeatable) and `--manifest [NAME=]FILE` into Sources; names default to the folder's."""
    if not data:
        raise WbcError("no training data: pass --data DIR, or --data kaggle=DIR --data pbc=DIR for several sources")
    sources = []
    for name, root in _pairs(data, "--data"):
        name = name or Path(root).resolve().name
        if any(s.name == name for s in sources):
            raise WbcError(f"two sources are named '{name}': name them, e.g. --data kaggle=DIR --data pbc=DIR")
        find_layout(root)  # fails early, with a clear message, on a wrong folder
        sources.append(Source(name, root))
    by_name = {s.name: s for s in sources}
    for name, path in _pairs(manifests or [], "--manifest"):
        if not name and len(sources) == 1:
            name = sources[0].name
        if name not in by_name:
            raise WbcError(f"--manifest {name or path}: no source named '{name}' (sources: {', '.join(by_name)}); write NAME=FILE")
        if not Path(path).is_file():
            raise WbcError(f"split manifest not found: {path} (make one with `wbc data split`)")
        by_name[name].manifest = path
    return sources


def source_manifest(src: Source, run: Path, val_fraction: float, seed: int, progress=None) -> Path:
    """The source's split manifest inside the run folder (made, or copied from the given one)."""
    dest = run / "manifests" / f"{src.name}.csv"
    if dest.is_file():
        return dest  # a resumed run keeps its split
    if src.manifest:  # there: parse_sources checked
        atomic_save(dest, lambda tmp: shutil.copyfile(src.manifest, tmp))
    else:
        rows = make_manifest(scan(src.root, progress=progress), val_fraction, seed, progress=progress)
        write_manifest(rows, dest)
    return dest


def load_rows(sources: list[Source], run: Path, val_fraction: float, seed: int, progress=None) -> tuple[list[Row], dict[str, SourceInfo]]:
    """Every train/val row of every source, and what the model file will record about each source."""
    from wbc.image.scale import source_scale

    rows: list[Row] = []
    infos: dict[str, SourceInfo] = {}
    cache = run / "sources.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    for src in sources:
        manifest = source_manifest(src, run, val_fraction, seed, progress)
        mine = [Row(r.path, r.label, r.group, r.split, src.name) for r in read_manifest(manifest, src.root) if r.split in ("train", "val")]
        if not any(r.split == "train" for r in mine) or not any(r.split == "val" for r in mine):
            raise WbcError(f"source {src.name}: {manifest} has no train or no val rows; re-make it with `wbc data split`")
        sha = manifest_hash(manifest)
        if src.name in known and known[src.name]["manifest_sha256"] == sha:
            info = SourceInfo(**known[src.name])
        else:
            scale = source_scale([r.path for r in mine if r.split == "train"])
            if not scale["px_per_um"]:
                raise WbcError(f"source {src.name}: no red cells measurable in its images, so its scale is unknown")
            counts = {s: dict(sorted(Counter(r.label for r in mine if r.split == s).items())) for s in ("train", "val")}
            groups = {s: len({r.group for r in mine if r.split == s}) for s in ("train", "val")}
            info = SourceInfo(src.name, str(src.root), str(manifest), sha, scale["px_per_um"], scale, counts, groups)
        infos[src.name] = info
        rows += mine
    atomic_write_text(cache, json.dumps({k: v.__dict__ for k, v in infos.items()}, indent=2))
    return rows, infos


def balanced_weights(rows: list[Row], mode: str = "source") -> list[float]:
    """Sampling weight per row. "source": each source an equal share, each class an equal share of its
    source. "pair": each (source, class) pair an equal share, so a source with more classes gets more
    (with Kaggle's 4 and PBC's 8: a third and two thirds), and a class two sources share is seen in
    both styles equally often."""
    per = Counter((r.source, r.label) for r in rows)
    if mode == "pair":
        return [1.0 / (len(per) * per[(r.source, r.label)]) for r in rows]
    if mode != "source":
        raise WbcError(f"--balance must be source or pair, not '{mode}'")
    classes_of = Counter(s for s, _ in per)
    n_sources = len(classes_of)
    return [1.0 / (n_sources * classes_of[r.source] * per[(r.source, r.label)]) for r in rows]


def subsample(rows: list[Row], per_class: int, seed: int) -> list[Row]:
    """At most `per_class` rows per (source, class), one image per source group before any second."""
    import random

    rows = list(rows)
    random.Random(seed).shuffle(rows)
    seen: Counter = Counter()
    ranked = []
    for r in rows:
        seen[(r.source, r.group)] += 1
        ranked.append((seen[(r.source, r.group)], r))
    ranked.sort(key=lambda t: t[0])
    out, counts = [], Counter()
    for _, r in ranked:
        if counts[(r.source, r.label)] < per_class:
            out.append(r)
            counts[(r.source, r.label)] += 1
    return out


def sources_digest(infos: dict[str, SourceInfo]) -> str:
    """One hash over every source's split: two models with equal digests saw the same data split."""
    return hashlib.sha256("".join(f"{k}:{v.manifest_sha256};" for k, v in sorted(infos.items())).encode()).hexdigest()
