"""A case as a lab system reads it: CSV today (FHIR R4 and HL7 v2 come next, issue 14 item 5)."""

from __future__ import annotations

import csv
import io
import uuid

from sqlalchemy import select

from wbc.review.cases import differential
from wbc.review.db import Case, Signature, aware


def case_csv(session, case: Case) -> str:
    """One row per class: count, % of white cells (or per 100 white cells for the rest), the signatures."""
    d = differential(case)
    sigs = session.scalars(select(Signature).where(Signature.case_id == case.id).order_by(Signature.id)).all()
    signed = "; ".join(f"{s.kind} {s.user} {s.at.isoformat()} ({s.meaning})" for s in sigs)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["case", "reference", "version", "specimen", "status", "class", "count", "percent_of_white_cells",
                "ci95_low", "ci95_high", "per_100_white_cells", "white_cells", "signatures"])
    head = [case.id, _cell(case.reference), case.version, _cell(case.specimen), case.status]
    signed = _cell(signed)
    for r in d["differential"]:
        ci = r["ci95"] or [None, None]
        w.writerow([*head, r["class"], r["count"], _f(r["percent"]), _f(ci[0]), _f(ci[1]), "", d["white_cells"], signed])
    for r in d["not_white"]:
        w.writerow([*head, r["class"], r["count"], "", "", "", _f(r["per_100_white"]), d["white_cells"], signed])
    return out.getvalue()


def _cell(text: str) -> str:
    """Typed text as a spreadsheet shows it, not as a formula it runs: a leading = + - @ tab or CR gets a quote
    (OWASP's advice for CSV injection; a case reference "=HYPERLINK(...)" opened in Excel stays text)."""
    return "'" + text if text and text[0] in "=+-@\t\r" else text


def _f(v) -> str:
    return "" if v is None else f"{v:.1f}"


# LOINC codes, from LOINC's "Manual Differential panel - Blood" (https://loinc.org/24318-8): its members are
# "<cell>/100 leukocytes in Blood" (property NFr, UCUM unit %), method-less, which fits a differential counted by
# a technologist verifying pre-classified cells. Checked against loinc.org/24318-8 (panel, basophils, blasts,
# eosinophils as listed there) and the panel's member list as HL7's mCODE CBC value set copies it.
PANEL = ("24318-8", "Manual Differential panel - Blood")
LOINC = {
    "NEUTROPHIL": ("26511-6", "Neutrophils/100 leukocytes in Blood"),
    "LYMPHOCYTE": ("26478-8", "Lymphocytes/100 leukocytes in Blood"),
    "MONOCYTE": ("26485-3", "Monocytes/100 leukocytes in Blood"),
    "EOSINOPHIL": ("26450-7", "Eosinophils/100 leukocytes in Blood"),
    "BASOPHIL": ("30180-4", "Basophils/100 leukocytes in Blood"),
    "BLAST": ("26446-5", "Blasts/100 leukocytes in Blood"),
    "SMUDGE": ("34992-8", "Smudge cells/100 leukocytes in Blood"),
}
# No code taken for: IG (the panel counts metamyelocytes, myelocytes and promyelocytes apart; wbc's class
# lumps them), ERYTHROBLAST, PLATELET, ARTEFACT, NO_WHITE_CELL and UNIDENTIFIED (a signed case holds none).
# They stay in the CSV; the FHIR and HL7 exports list them in a note / NTE segment, uncoded.
LOINC_SYSTEM, UCUM_SYSTEM = "http://loinc.org", "http://unitsofmeasure.org"


def coded_rows(case: Case) -> tuple[list[dict], list[str]]:
    """(rows with a LOINC code: class, code, name, percent of white cells / per 100 white cells), (uncoded lines)."""
    d = differential(case)
    rows, other = [], []
    for r in d["differential"]:
        if r["class"] in LOINC:
            rows.append({"class": r["class"], "code": LOINC[r["class"]][0], "name": LOINC[r["class"]][1], "value": r["percent"] or 0.0})
        elif r["count"]:
            other.append(f"{r['class']}: {r['count']} of {d['white_cells']} white cells (no LOINC code fits)")
    for r in d["not_white"]:
        if r["class"] in LOINC:
            rows.append({"class": r["class"], "code": LOINC[r["class"]][0], "name": LOINC[r["class"]][1], "value": r["per_100_white"] or 0.0})
        else:
            other.append(f"{r['class']}: {r['count']} ({r['per_100_white']:.1f} per 100 white cells; no LOINC code fits)")
    return rows, other


def _signatures(session, case: Case) -> list[Signature]:
    return session.scalars(select(Signature).where(Signature.case_id == case.id).order_by(Signature.id)).all()


def case_fhir(session, case: Case) -> str:
    """A FHIR Bundle (R4B, R4's wire format for these resources; fhir.resources validates it): a DiagnosticReport
    for the panel with one Observation per coded class, value per 100 leukocytes in %, the signers as
    performers, `final` once signed (else `preliminary`)."""
    from fhir.resources.R4B.bundle import Bundle

    rows, other = coded_rows(case)
    sigs = _signatures(session, case)
    status = "final" if case.status in ("signed", "amended") else "preliminary"
    issued = aware(sigs[0].at if sigs else case.created_at).isoformat()
    performers = [{"display": f"{s.user} ({s.kind} signature: {s.meaning})"} for s in sigs]
    ident = [{"system": "urn:wbc:sample", "value": case.reference}]
    obs = []
    for i, r in enumerate(rows):
        obs.append({"fullUrl": _urn(case, f"obs-{i}"), "resource": {
            "resourceType": "Observation", "status": status, "identifier": ident,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC_SYSTEM, "code": r["code"], "display": r["name"]}], "text": r["class"]},
            "valueQuantity": {"value": round(r["value"], 1), "unit": "%", "system": UCUM_SYSTEM, "code": "%"},
            "performer": performers or None, "issued": issued}})
    report = {"resourceType": "DiagnosticReport", "status": status, "identifier": ident,
              "code": {"coding": [{"system": LOINC_SYSTEM, "code": PANEL[0], "display": PANEL[1]}]},
              "issued": issued, "performer": performers or None, "result": [{"reference": o["fullUrl"]} for o in obs],
              "conclusion": "; ".join(other) or None}
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": _urn(case, "report"), "resource": _clean(report)}] +
                       [{"fullUrl": o["fullUrl"], "resource": _clean(o["resource"])} for o in obs]}
    return Bundle.model_validate(bundle).model_dump_json(indent=2, exclude_none=True)


def _urn(case: Case, what: str) -> str:
    """A stable UUID per case version and part, so a re-export names the same resources."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'wbc:case:{case.id}:v{case.version}:{what}')}"


def _clean(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def case_hl7(session, case: Case) -> str:
    """An HL7 v2.5.1 ORU^R01 (built and validated strictly with hl7apy): OBR for the panel, one OBX per coded
    class (NM, % per 100 leukocytes), NTE for the uncoded ones, the signers in OBX-16."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message

    rows, other = coded_rows(case)
    sigs = _signatures(session, case)
    result = "F" if case.status in ("signed", "amended") else "P"
    m = Message("ORU_R01", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
    m.msh.msh_3, m.msh.msh_4, m.msh.msh_5, m.msh.msh_6 = "wbc", "WBC-REVIEW", "LIS", "LAB"
    m.msh.msh_7 = (sigs[0].at if sigs else case.created_at).strftime("%Y%m%d%H%M%S")
    m.msh.msh_9, m.msh.msh_10, m.msh.msh_11, m.msh.msh_12 = "ORU^R01^ORU_R01", f"WBC{case.id}V{case.version}", "P", "2.5.1"
    pr = m.add_group("ORU_R01_PATIENT_RESULT")
    pid = pr.add_group("ORU_R01_PATIENT").pid
    pid.pid_3, pid.pid_5 = _hl7(case.reference), "UNKNOWN"
    oo = pr.add_group("ORU_R01_ORDER_OBSERVATION")
    oo.obr.obr_1, oo.obr.obr_3, oo.obr.obr_4, oo.obr.obr_25 = "1", _hl7(case.reference), f"{PANEL[0]}^{PANEL[1]}^LN", result
    signer = "~".join(_hl7(s.user) for s in sigs)
    for i, r in enumerate(rows, start=1):
        obx = oo.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1, obx.obx_2, obx.obx_3 = str(i), "NM", f"{r['code']}^{r['name']}^LN"
        obx.obx_5, obx.obx_6, obx.obx_11 = f"{r['value']:.1f}", "%^percent^UCUM", result
        if signer:
            obx.obx_16 = signer
    for i, line in enumerate(other, start=1):
        nte = oo.add_segment("NTE")
        nte.nte_1, nte.nte_3 = str(i), _hl7(line)
    if not m.validate():
        raise ValueError("the HL7 message did not validate")
    return m.to_er7()


def _hl7(text: str) -> str:
    """Text safe in an HL7 field: the delimiters |^~\\& replaced."""
    return "".join(" " if ch in "|^~\\&\r\n" else ch for ch in text)
