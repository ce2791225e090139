"""When should an image's own red-cell scale give way to its run's? Measured on the validation splits only.

    python scripts/scale_trust.py [MODEL] [--data ../shared/data] [--out reports/scale_trust.json]

Every validation image of each source (the shipped split manifests) is classified three times: with its own
red-cell scale uncorrected (the run's median only when it has none), with the run's median given, and as
`wbc predict` frames it (the rule in wbc.image.framing.image_scale). Each image's own estimate, the red
cells it rests on and its answers are written out, so `scripts/scale_rules.py` scores rules such as "take the run's
scale unless the image's own rests on N red cells or more and is off by more than T" for every T and N without
classifying again. A pooled run of all three sources checks that a folder mixing microscopes keeps each one's scale
(the run's scale is kept per image size).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from wbc.image import framing
from wbc.image.decode import decode
from wbc.image.framing import FAR_OFF, STRONG_RBCS, run_scale, source_image
from wbc.image.scale import estimate_scale
from wbc.infer.predictor import load_model

sys.path.insert(0, str(Path(__file__).parent))
from scale_rules import figures  # noqa: E402  (the rules' own figures, beside this script)

SOURCES = {"kaggle": ("split_manifest.csv", "blood-cells/dataset2-master/images"), "pbc": ("split_pbc.csv", "pbc"),
           "munich": ("split_munich.csv", "munich-aml")}


def split_rows(data: Path, source: str, split: str = "val") -> list[tuple[str, str]]:
    manifest, root = SOURCES[source]
    path = Path(__file__).resolve().parents[1] / "src/wbc/assets" / manifest
    with open(path) as f:
        return [(str(data / root / r["path"]), r["class"]) for r in csv.DictReader(f) if r["split"] == split]


def records(p, rows: list[tuple[str, str]], run) -> list[dict]:
    """Each image's own estimate and three answers: its own scale uncorrected, the run's median given, and as
    `wbc predict` frames it today (`shipped`: the rule of wbc.image.framing.image_scale on)."""
    paths = [r[0] for r in rows]
    shipped = p.predict(paths, px_per_um=run)
    framing.STRONG_RBCS, framing.FAR_OFF = 0, 0.0  # every estimate strong and far: each image's own scale
    try:
        own = p.predict(paths, px_per_um=run)
    finally:
        framing.STRONG_RBCS, framing.FAR_OFF = STRONG_RBCS, FAR_OFF
    forced = p.predict(paths, px_per_um=run.px_per_um)
    out = []
    for (path, truth), a, b, c in zip(rows, own, forced, shipped):
        est = estimate_scale(source_image(decode(path), p.spec))
        out.append({"path": path, "truth": truth, "px": a.px_per_um, "how": a.scale, "rbcs": est.rbcs,
                    "own": [a.label, a.review], "run": [b.label, b.review], "shipped": [c.label, c.review, c.scale]})
    return out


def shipped_score(recs: list[dict]) -> dict:
    return {**figures([r["shipped"] for r in recs], [r["truth"] for r in recs]),
            "corrected": sum(r["shipped"][2] == "corrected" for r in recs), "run": sum(r["shipped"][2] == "run" for r in recs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="reports/scale_trust.json")
    ap.add_argument("--split", default="val", help="val, or train (the model saw those cells: a second look, biased to no change)")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    a = ap.parse_args()
    p = load_model(a.model)
    rows = {s: split_rows(Path(a.data), s, a.split) for s in a.sources}
    if len(rows) > 1:
        rows["pooled"] = [r for s in a.sources for r in rows[s]]
    result = {}
    for name, rs in rows.items():
        run = run_scale([r[0] for r in rs])
        if name == "pooled":  # several sizes: only the framing as shipped, which keeps each size's own scale
            recs = [{"path": path, "truth": truth, "shipped": [q.label, q.review, q.scale]}
                    for (path, truth), q in zip(rs, p.predict([r[0] for r in rs], px_per_um=run))]
        else:
            recs = records(p, rs, run)
        result[name] = {"run_px": run.px_per_um, "run_sizes": run.sizes, "records": recs}
        print(f"{name}: {len(recs)} images, run {run.px_per_um:.2f} px/um ({len(run.sizes)} sizes); as shipped: "
              + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shipped_score(recs).items()), flush=True)
    for part in result.values():  # paths relative to --data: the file reads the same on any machine
        for r in part["records"]:
            r["path"] = os.path.relpath(r["path"], a.data)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result))
    print(f"records in {a.out}; the rules scored: python scripts/scale_rules.py {a.out}")


if __name__ == "__main__":
    main()
