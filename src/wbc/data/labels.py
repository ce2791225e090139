"""A labelled folder-per-class set mapped onto a model's classes (evaluate, adapt, export checks)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wbc.data.scan import scan
from wbc.errors import WbcError

log = logging.getLogger(__name__)

# Folder names other sets and labs give the model's classes (upper case, "_" and "-" read as spaces; a plural "s"
# is dropped first). Abnormal or variant cells are left out on purpose (atypical/variant lymphocytes, promonocytes,
# smudge cells, Munich's bilobed promyelocytes of APL): a folder of them stays a class the model lacks.
ALIASES = {
    # the Munich AML-Cytomorphology_LMU download's folders (Matek et al. 2019)
    "MYO": "BLAST", "MOB": "BLAST", "NGS": "NEUTROPHIL", "NGB": "NEUTROPHIL", "LYT": "LYMPHOCYTE", "MON": "MONOCYTE",
    "EOS": "EOSINOPHIL", "BAS": "BASOPHIL", "EBO": "ERYTHROBLAST", "MYB": "IG", "MMZ": "IG", "PMO": "IG",
    # PBC's finer labels (its IG: promyelocytes, myelocytes, metamyelocytes; its NEUTROPHIL: segmented and band)
    "SNE": "NEUTROPHIL", "BNE": "NEUTROPHIL", "PMY": "IG", "MY": "IG", "MMY": "IG",
    # the field's words and LISC/Raabin-style short names
    "SEGMENTED NEUTROPHIL": "NEUTROPHIL", "BAND NEUTROPHIL": "NEUTROPHIL", "BAND": "NEUTROPHIL", "NEUT": "NEUTROPHIL",
    "NEUTRO": "NEUTROPHIL", "LYMPH": "LYMPHOCYTE", "LYMP": "LYMPHOCYTE", "LYMPHO": "LYMPHOCYTE", "MONO": "MONOCYTE",
    "EO": "EOSINOPHIL", "EOSI": "EOSINOPHIL", "EOSINO": "EOSINOPHIL", "BASO": "BASOPHIL",
    "IMMATURE GRANULOCYTE": "IG", "PROMYELOCYTE": "IG", "MYELOCYTE": "IG", "METAMYELOCYTE": "IG",
    "NRBC": "ERYTHROBLAST", "NORMOBLAST": "ERYTHROBLAST", "NUCLEATED RED BLOOD CELL": "ERYTHROBLAST",
    "NUCLEATED RED CELL": "ERYTHROBLAST", "THROMBOCYTE": "PLATELET", "PLT": "PLATELET",
    "MYELOBLAST": "BLAST", "MONOBLAST": "BLAST", "LYMPHOBLAST": "BLAST",
}


def named_twice(names: list[str]) -> list[list[str]]:
    """Groups of class names that class_of reads as one type ("NEUTROPHIL" of one source, "NEUTROPHILS" or "NGS" of
    another): trained apart, they would be two classes of one cell type."""
    house, groups = sorted(set(ALIASES.values())), {}
    for n in names:
        groups.setdefault(class_of(n, house) or class_of(n, [m for m in names if m != n]) or n, []).append(n)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def class_of(folder: str, classes: list[str]) -> str | None:
    """The model class a class folder's name means (its own name, a plural, or a name in ALIASES); None: none."""
    known = {c.upper(): c for c in classes}
    name = " ".join(folder.upper().replace("_", " ").replace("-", " ").split())
    for n in (name, name[:-1] if name.endswith("S") else None):
        if n is not None and (n in known or (n in ALIASES and ALIASES[n] in known)):
            return known.get(n) or known[ALIASES[n]]
    return None


@dataclass
class Labelled:
    paths: list[Path]
    y: np.ndarray  # index into the model's classes
    skipped_bad: int
    ignored_unknown: int
    unknown: dict[str, list[Path]] | None = None  # images of class folders the model lacks, by folder name
    read_as: dict[str, str] | None = None  # class folders read as a model class of another name (ALIASES, plurals)


def match_classes(data: str, split: str | None, classes: list[str], ignore_unknown: bool, progress=None, check: bool = True) -> Labelled:
    """Images of one split (None: every image of the tree) with labels mapped (case-insensitively) onto the
    model's classes. A class folder the model does not know is an error unless `ignore_unknown`."""
    s = scan(data, progress=progress, check=check)
    recs = s.split(split) if split else s.records
    split = split or "ALL"
    index = {c: i for i, c in enumerate(classes)}
    meant = {f: class_of(f, classes) for f in sorted({r.label for r in recs})}
    unknown = [f for f, c in meant.items() if c is None]
    if unknown and not ignore_unknown:
        raise WbcError(f"{data}: class folder(s) {', '.join(unknown)} in {split} are not classes of this model "
                       f"({', '.join(classes)}): rename them or pass --ignore-unknown")
    kept = [r for r in recs if meant[r.label] is not None]
    if not kept:
        raise WbcError(f"no images of the model's classes in split {split} of {data}")
    read_as = {f: c for f, c in meant.items() if c is not None and c.upper() != f}
    if read_as:
        log.info("class folders read as the model's classes: %s", ", ".join(f"{f} as {c}" for f, c in read_as.items()))
    bad = sum(1 for b in s.bad if f"/{split.upper()}/" in b.path.as_posix().upper() or split.upper() == "ALL")
    others: dict[str, list[Path]] = {}
    for r in recs:
        if meant[r.label] is None:
            others.setdefault(r.label, []).append(r.path)
    return Labelled([r.path for r in kept], np.array([index[meant[r.label]] for r in kept]), bad, len(recs) - len(kept), others, read_as)
