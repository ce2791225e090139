"""`wbc predict` on whole BCCD fields (one white cell named in labels.csv), under the field shifts of wbc.data.shifts:
the white cell's class, the share left unflagged and how many of those are right, the real cells dropped ("no white
cell found"), and the scale measured (px/um at the field's original size; BCCD is about 14). Each field alone, as a
user's single image, or with `--run` as one folder (the run's scale, `wbc.image.framing.run_scale`, as `wbc predict
DIR` takes it). Issue 17 item 5: another lab's fields, named from the whole field.

    python scripts/predict_fields.py [--split val] [--shifts none,cyan_dark_red,...] [--run] [--out reports/predict_fields.json]

Selection uses `val`; the `test` list is only measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wbc._util.io import atomic_write_text
from wbc.count.evaluate import read_labels
from wbc.count.voc import read_ids
from wbc.data.locate import resolve_bccd, resolve_data
from wbc.data.shifts import FIELD_SHIFTS, shifted_field
from wbc.image.decode import decode
from wbc.image.framing import run_scale
from wbc.infer.answers import NO_WHITE_CELL
from wbc.infer.predictor import fastest, load_model


def labelled_fields(root: Path, split: str, classes: list[str]) -> list[tuple[str, str]]:
    """(field id, its one white cell's class) for the fields of `split` that labels.csv names with one of `classes`."""
    lab = read_labels(Path(resolve_data(None)) / "dataset-master" / "labels.csv")
    number = {i: int(i.rsplit("_", 1)[-1]) for i in read_ids(root, split) if i.rsplit("_", 1)[-1].isdigit()}
    return [(i, lab[n]) for i, n in number.items() if lab.get(n) in classes]


def measure(predictor, root: Path, fields: list[tuple[str, str]], how: str, run: bool) -> dict:
    shifted = [shifted_field(decode(root / "JPEGImages" / f"{i}.jpg"), how) for i, _ in fields]
    scale = run_scale([x for x, _ in shifted]) if run else None
    answers = [predictor.predict(x, px_per_um=scale)[0] for x, _ in shifted]
    right = np.array([a.label == c for a, (_, c) in zip(answers, fields)])
    free = np.array([not a.review for a in answers])
    kinds: dict[str, int] = {}
    for a in answers:
        kinds[a.scale] = kinds.get(a.scale, 0) + 1
    return {"fields": len(fields), "accuracy": float(right.mean()), "unflagged": int(free.sum()), "unflagged_right": int(right[free].sum()),
            "dropped": sum(a.label == NO_WHITE_CELL for a in answers),
            "px_per_um_median": float(np.median([a.px_per_um / f for a, (_, f) in zip(answers, shifted)])),
            "run_px_per_um": None if scale is None else scale.px_per_um / shifted[0][1], "scale_kinds": kinds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", default=None)
    ap.add_argument("--shifts", default=",".join(FIELD_SHIFTS))
    ap.add_argument("--run", action="store_true", help="the fields of a shift as one folder, with the run's scale")
    ap.add_argument("--out", type=Path, default=Path("reports/predict_fields.json"))
    a = ap.parse_args()
    root = Path(resolve_bccd(None))
    predictor = fastest(load_model(a.model))
    fields = labelled_fields(root, a.split, predictor.classes)
    rows = {}
    for how in a.shifts.split(","):
        r = rows[how] = measure(predictor, root, fields, how, a.run)
        run = "" if r["run_px_per_um"] is None else f" run {r['run_px_per_um']:.2f} px/um"
        print(f"{how:20} {r['accuracy']:6.1%} right, {r['unflagged']:3} of {r['fields']} unflagged ({r['unflagged_right']} right), "
              f"dropped {r['dropped']}, px/um {r['px_per_um_median']:.1f}{run} {r['scale_kinds']}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps({"split": a.split, "run": a.run, "shifts": rows}, indent=2))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
