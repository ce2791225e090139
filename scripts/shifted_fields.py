"""The detector and the count on shifted copies of BCCD fields: other labs' colour casts (a cyan background
whose red cells turn dark blue-grey, yellow, grey), a pale stain, greyscale, blur and other magnifications
(scale measured per field, as `wbc count` does). Issue 17 item 5: no field of a normal smear should report
a cell type that is not there without a flag.

    python scripts/shifted_fields.py [--split val] [--detector FILE] [--tones as-is] [--out reports/shifted_fields/val.json]

`--tones as-is`: fields read as they are, never through curves onto BCCD's tones (wbc.image.tone), as before
session 26.

Selection uses `val`; the `test` list is only measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wbc._util.io import atomic_write_text
from wbc.count.detector import default_detector
from wbc.count.evaluate import evaluate_count
from wbc.data.locate import resolve_bccd, resolve_data
from wbc.data.shifts import FIELD_SHIFTS
from wbc.infer.predictor import fastest, load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="val")
    ap.add_argument("--detector", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--shifts", default=",".join(FIELD_SHIFTS))
    ap.add_argument("--tones", choices=("mapped", "as-is"), default="mapped")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.tones == "as-is":
        import wbc.count.count as count

        count.TONE_GAIN_LIMIT = count.TONE_CONTRAST_LIMIT = float("inf")
    root, labels = resolve_bccd(None), Path(resolve_data(None)) / "dataset-master" / "labels.csv"
    predictor, detector = fastest(load_model(a.model)), default_detector(a.detector)
    rows = {}
    print(f"{'shift':16} {'mAP50':>6} {'WBC AP':>6} {'RBC AP':>6} {'RBC MAE':>7} {'WBC prec':>8} {'WBC rec':>7} "
          f"{'phantom fields':>14} {'unflagged':>9} {'WBC class':>9} {'unflagged WBCs':>14} {'right':>6} {'warned':>6}")
    for how in a.shifts.split(","):
        r = evaluate_count(predictor, root, a.split, labels if labels.is_file() else None, detector=detector, shift=how)
        d, ph = r["detection"], r["phantom_wbc"]
        cls = r.get("wbc_class", {}).get("all_single_label", {})
        acc, free, free_acc = cls.get("accuracy"), cls.get("unflagged"), cls.get("unflagged_accuracy")
        rows[how] = r
        print(f"{how:16} {r['map50']:6.3f} {d['WBC']['ap50']:6.3f} {d['RBC']['ap50']:6.3f} {d['RBC']['count_mae']:7.2f} "
              f"{d['WBC']['precision']:8.3f} {d['WBC']['recall']:7.3f} {ph['fields']:>14} {ph['unflagged']:>9} "
              f"{'-' if acc is None else f'{acc:.3f}':>9} {'-' if free is None else f'{free:.3f}':>14} "
              f"{'-' if free_acc is None else f'{free_acc:.3f}':>6} {r['warned_fields']:>6}", flush=True)
    out = a.out or Path("reports/shifted_fields") / f"{a.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"detector": rows[next(iter(rows))]["detector"], "split": a.split, "shifts": rows}, indent=2, default=str))
    print(f"written {out}")


if __name__ == "__main__":
    main()
