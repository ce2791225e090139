"""Would a review threshold per predicted class leave more cells unflagged at the same accuracy? Validation only.

    python scripts/review_bands.py [--data ../shared/data] [--low 0.85]

Every validation image of each source (the shipped split manifests) is classified as `wbc predict` classifies a
folder (the run's scale). The cells flagged *only* for low confidence with a top probability in [--low, the
shipped threshold) are counted per source and predicted class, with how many of them are right: a class whose band
is right nearly always could take a lower threshold. The review reasons are counted too (which rule flags most).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

from wbc.image.framing import run_scale
from wbc.infer.predictor import load_model

sys.path.insert(0, str(Path(__file__).parent))
from scale_trust import SOURCES, split_rows  # noqa: E402


def only_low_confidence(reason: str | None) -> bool:
    return bool(reason) and all(part.startswith("low confidence") for part in reason.split("; "))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--low", type=float, default=0.85)
    a = ap.parse_args()
    p = load_model()
    print(f"shipped threshold {p.spec.review_threshold:.3f}; band [{a.low}, {p.spec.review_threshold:.3f})")
    for source in SOURCES:
        rows = split_rows(Path(a.data), source, "val")
        paths = [r[0] for r in rows]
        preds = p.predict(paths, px_per_um=run_scale(paths))
        reasons = collections.Counter(part.split(" (")[0] for q in preds for part in (q.review_reason or "unflagged").split("; "))
        band: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for (_, truth), q in zip(rows, preds):
            if only_low_confidence(q.review_reason) and q.probability >= a.low:
                band[q.label][0] += 1
                band[q.label][1] += q.label == truth
        print(f"{source} ({len(preds)}): reasons {dict(reasons.most_common())}")
        print("  band, right of flagged per predicted class: " + ", ".join(f"{k} {r} of {n}" for k, (n, r) in sorted(band.items())))


if __name__ == "__main__":
    main()
