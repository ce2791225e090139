"""BCCD's tones, the reference `wbc count` maps another lab's fields onto before finding cells (wbc.image.tone):
the median background and red-cell colours of BCCD's train fields, and how far BCCD's own fields lie from them
(the limits under which a field is read as it is). Shifted copies of the val fields show how far other labs lie.

    python scripts/field_tones.py [--out reports/field_tones.json]

Train fields give the reference; val fields and their shifted copies only check the limits (never the test list).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wbc._util.io import atomic_write_text
from wbc.count.voc import read_ids
from wbc.data.locate import resolve_bccd
from wbc.data.shifts import shifted_field
from wbc.image.decode import decode
from wbc.image.tone import Tones, departure, field_tones

SHIFTS = ("none", "cyan_dark_red", "cyan", "yellow", "grey_background", "pale_stain", "blur", "zoom_0.6", "zoom_1.5", "exposure_1.4", "noise_8")


def spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return {"n": int(v.size), **({k: round(float(np.quantile(v, q)), 3) for k, q in (("q05", 0.05), ("median", 0.5), ("q95", 0.95), ("max", 1.0))} if v.size else {})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/field_tones.json"))
    a = ap.parse_args()
    root = Path(resolve_bccd(None))
    train = [field_tones(decode(root / "JPEGImages" / f"{i}.jpg")) for i in read_ids(root, "train")]
    ref = Tones(tuple(np.median([t.background for t in train], axis=0).round(1)),
                tuple(np.median([t.red_cells for t in train if t.red_cells is not None], axis=0).round(1)))
    out = {"reference": {"background": ref.background, "red_cells": ref.red_cells}, "train": {}, "val": {}}
    d = [departure(t, ref) for t in train]
    out["train"] = {"gain": spread(g for g, _ in d), "contrast": spread(c for _, c in d)}
    print(f"reference {ref}; train {out['train']}", flush=True)
    val = [decode(root / "JPEGImages" / f"{i}.jpg") for i in read_ids(root, "val")]
    for how in SHIFTS:
        d = [departure(field_tones(shifted_field(v, how)[0]), ref) for v in val]
        out["val"][how] = {"gain": spread(g for g, _ in d), "contrast": spread(c for _, c in d)}
        print(how, out["val"][how], flush=True)
    atomic_write_text(a.out, json.dumps(out, indent=2, default=float))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
