"""`wbc count` on a camera of higher magnification than BCCD's: is each field's scale still measured right?

    python scripts/high_magnification.py [--fields 20] [--out reports/high_magnification.json]

A research microscope's camera at 100x gives 25-45 px/um, 2-3x BCCD's 14. BCCD val fields (never the test list) are
enlarged 1.5, 2, 3 and 4 times (bicubic, saved as JPEG) and counted as a user counts them (`count_field`, scale
measured). Per factor: the measured scale against the field's own at 1x times the factor (median and worst ratio),
and the fields whose WBC and RBC counts match the same field counted at 1x (WBC exactly, RBC within 20%), read the
way it was read before 2026-12-05 (the window one BCCD field wide at the detector's scale alone) and now (the whole
field too where the window finds few red cells, then measured once more at the scale found).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

import wbc.count.count as counting
from wbc._util.io import atomic_write_text
from wbc.count.detector import load_detector
from wbc.count.voc import read_ids
from wbc.data.locate import resolve_bccd
from wbc.image.decode import decode, decode_shrunk
from wbc.image.scale import estimate_scale
from wbc.infer.predictor import fastest, load_model

FACTORS = (1.5, 2.0, 3.0, 4.0)
NOW = counting.load_field  # the reading of today's wbc


def load_field_before(source, px_per_um, work_scale):
    """load_field as it was: the scale from the central window alone."""
    guess = px_per_um or counting.BCCD_PX_PER_UM
    work, (w, h) = decode_shrunk(source, work_scale / guess, counting.COUNT_MAX_PIXELS)
    if px_per_um:
        return work, (w, h), px_per_um, "given"
    hh, ww = work.shape[:2]
    win_w, win_h = min(ww, counting.MEASURE_WINDOW[0]), min(hh, counting.MEASURE_WINDOW[1])
    x0, y0 = (ww - win_w) // 2, (hh - win_h) // 2
    s = estimate_scale(np.ascontiguousarray(work[y0 : y0 + win_h, x0 : x0 + win_w]))
    if not s.found:
        return work, (w, h), guess, "assumed"
    measured = s.px_per_um / (ww / w)
    if abs(measured / guess - 1) > 0.02:
        work, _ = decode_shrunk(source, work_scale / measured, counting.COUNT_MAX_PIXELS)
    return work, (w, h), measured, "measured"


def counted(predictor, detector, path: Path) -> tuple[float, int, int]:
    c = counting.count_field(predictor, path, detector=detector)
    kinds = [b.kind for b in c.boxes]
    return c.px_per_um, kinds.count("WBC"), kinds.count("RBC")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fields", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("reports/high_magnification.json"))
    a = ap.parse_args()
    bccd = Path(resolve_bccd(None))
    predictor, detector = fastest(load_model(None)), load_detector()
    rows = {f"{k}x": {"before": [], "now": []} for k in FACTORS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in read_ids(bccd, "val")[: a.fields]:
            src = bccd / "JPEGImages" / f"{i}.jpg"
            base = counted(predictor, detector, src)
            rgb = decode(src)
            for k in FACTORS:
                big = Path(tmp) / f"{i}_{k}.jpg"
                cv2.imwrite(str(big), cv2.cvtColor(cv2.resize(rgb, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 92])
                for when, loader in (("before", load_field_before), ("now", NOW)):
                    counting.load_field = loader
                    px, wbc_n, rbc_n = counted(predictor, detector, big)
                    rows[f"{k}x"][when].append({"field": i, "ratio": px / (base[0] * k), "wbc_same": wbc_n == base[1],
                                               "rbc_within_20": abs(rbc_n - base[2]) <= 0.2 * max(1, base[2])})
                counting.load_field = NOW
    table = {}
    for k, v in rows.items():
        for when, r in v.items():
            ratio = np.array([x["ratio"] for x in r])
            table.setdefault(k, {})[when] = {"fields": len(r), "scale_ratio_median": round(float(np.median(ratio)), 3),
                                             "scale_ratio_worst": round(float(ratio[np.argmax(np.abs(np.log(ratio)))]), 3),
                                             "within_15pct": int(np.sum(np.abs(ratio - 1) <= 0.15)),
                                             "wbc_count_same": sum(x["wbc_same"] for x in r), "rbc_count_within_20pct": sum(x["rbc_within_20"] for x in r)}
            t = table[k][when]
            print(f"{k:5s} {when:7s} scale/truth median {t['scale_ratio_median']:.2f} worst {t['scale_ratio_worst']:.2f}, within 15% "
                  f"{t['within_15pct']}/{t['fields']}; WBC count as at 1x {t['wbc_count_same']}, RBC within 20% {t['rbc_count_within_20pct']}")
    atomic_write_text(a.out, json.dumps(table, indent=2))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
