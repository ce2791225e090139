"""A case as a lab system reads it: CSV today (FHIR R4 and HL7 v2 come next, issue 14 item 5)."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from wbc.review.cases import differential
from wbc.review.db import Case, Signature


def case_csv(session, case: Case) -> str:
    """One row per class: count, % of white cells (or per 100 white cells for the rest), the signatures."""
    d = differential(case)
    sigs = session.scalars(select(Signature).where(Signature.case_id == case.id).order_by(Signature.id)).all()
    signed = "; ".join(f"{s.kind} {s.user} {s.at.isoformat()} ({s.meaning})" for s in sigs)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["case", "reference", "version", "specimen", "status", "class", "count", "percent_of_white_cells",
                "ci95_low", "ci95_high", "per_100_white_cells", "white_cells", "signatures"])
    head = [case.id, case.reference, case.version, case.specimen, case.status]
    for r in d["differential"]:
        ci = r["ci95"] or [None, None]
        w.writerow([*head, r["class"], r["count"], _f(r["percent"]), _f(ci[0]), _f(ci[1]), "", d["white_cells"], signed])
    for r in d["not_white"]:
        w.writerow([*head, r["class"], r["count"], "", "", "", _f(r["per_100_white"]), d["white_cells"], signed])
    return out.getvalue()


def _f(v) -> str:
    return "" if v is None else f"{v:.1f}"
