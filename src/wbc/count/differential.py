"""The differential: counts and percentages per white-cell type with their 95% intervals, blasts and
unidentified cells first, and the alert lines no user may miss. Shared by `wbc count`, the API and the
review station; it needs no network, so reading a case does not load one."""

from __future__ import annotations

from wbc.infer.answers import UNIDENTIFIED

CLINICAL_ORDER = ["NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL", "BASOPHIL"]
ALARM = ["BLAST", UNIDENTIFIED]  # listed first, and said in a line of their own whenever present


def wilson(k: int, n: int) -> tuple[float, float] | None:
    """95% Wilson score interval for k of n (None when n is 0)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def differential(labels: list[str], classes: list[str]) -> list[dict]:
    """Count and percentage per WBC class, blasts and unidentified cells first, then clinical row order,
    with 95% Wilson intervals. UNIDENTIFIED (far from every known type) is always a row: never folded into a type."""
    n = len(labels)
    rows = []
    order = [c for c in ALARM if c in classes or c == UNIDENTIFIED] + CLINICAL_ORDER
    for c in order + [c for c in classes if c not in order]:
        known = c in classes or c == UNIDENTIFIED
        k = labels.count(c)
        ci = wilson(k, n) if known else None
        rows.append({"class": c, "count": k if known else None, "percent": 100 * k / n if n and known else None,
                     "ci95": [100 * ci[0], 100 * ci[1]] if ci else None, "in_model": known})
    return rows


def alerts(labels: list[str]) -> list[str]:
    """The lines no user may miss: "blasts: 3 of 112 white cells (2.7%)", the same for unidentified cells."""
    n = len(labels)
    names = {"BLAST": "blasts", UNIDENTIFIED: "unidentified cells (unlike every known type: review them)"}
    return [f"{names[c]}: {labels.count(c)} of {n} white cells ({100 * labels.count(c) / n:.1f}%)" for c in ALARM if labels.count(c)]
