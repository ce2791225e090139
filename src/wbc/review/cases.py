"""A case's life: import (the model pre-classifies), review (open, reclassify, undo), sign (and a second
signature), amend (a new version, the signed one kept). Every change writes an audit row in the same
transaction as the change itself, so no committed reclassification lacks its record."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm.exc import StaleDataError

from wbc.count.differential import differential as count_differential
from wbc.errors import WbcError
from wbc.infer.answers import NO_WHITE_CELL, UNIDENTIFIED
from wbc.review.db import Audit, Case, Cell, Signature, User
from wbc.review.images import store
from wbc.review.users import authenticate

log = logging.getLogger(__name__)

SPECIMENS = {"blood": 100, "marrow": 200}  # the cells a differential counts to
REVIEW_ONLY = ("SMUDGE", "ARTEFACT")  # classes only a reviewer sets
NOT_WHITE = {"PLATELET", "ERYTHROBLAST", "SMUDGE", "ARTEFACT", NO_WHITE_CELL}  # outside the denominator; per 100 white cells
SIGNERS = {"primary": ("technologist", "reviewer", "admin"), "second": ("reviewer", "admin")}
FIELD_CROP_UM = 40.0  # a WBC cut from a smear field: this square around its box


class Conflict(WbcError):
    """Somebody else changed it first (HTTP 409)."""


class Refused(WbcError):
    """Not allowed in this state or for this user (HTTP 409)."""


class WrongPassword(Refused):
    """A signature with the wrong password (HTTP 403)."""


class NotFound(WbcError):
    """No such case or cell (HTTP 404)."""


def review_classes(model_classes: list[str]) -> list[str]:
    """What a cell may be set to: the model's classes, then UNIDENTIFIED, the review-only classes, no white cell."""
    return [*model_classes, UNIDENTIFIED, *REVIEW_ONLY, NO_WHITE_CELL]


def audit(session, case: Case, user: str, action: str, cell: Cell | None = None, old: str | None = None,
          new: str | None = None, why: str | None = None) -> None:
    session.add(Audit(case_id=case.id, cell_id=cell.id if cell else None, user=user, action=action, old=old, new=new, why=why))


def create_case(session, reference: str, specimen: str, user: str) -> Case:
    if specimen not in SPECIMENS:
        raise WbcError(f"specimen must be {' or '.join(SPECIMENS)}, not '{specimen}'")
    if not reference.strip():
        raise WbcError("a case needs a sample reference")
    case = Case(reference=reference.strip(), specimen=specimen, created_by=user, status="open", version=1)
    session.add(case)
    session.flush()
    audit(session, case, user, "create", why=f"{specimen} sample {case.reference}")
    return case


def get_case(session, case_id: int) -> Case:
    case = session.get(Case, case_id)
    if case is None:
        raise NotFound(f"no case {case_id} (list them with `wbc review cases`)")
    return case


def _writable(case: Case) -> None:
    if case.status != "open":
        raise Refused(f"case {case.id} ({case.reference}) is {case.status}: read-only; amend it to change it")


def add_cell(session, case: Case, image: str, source: str, answer: dict, box: list | None = None,
             px_per_um: float | None = None, scale: str | None = None) -> Cell:
    """A pre-classified cell (`answer`: Prediction.to_dict() or a count's WBC entry) into the case, with the scale
    it was framed at and how it was known (`px_per_um`, `scale`, else the answer's own)."""
    cell = Cell(case_id=case.id, image=image, source=source, field_box=box, model_class=answer["class"],
                probabilities={k: round(float(v), 5) for k, v in answer["probabilities"].items()},
                distance=answer.get("distance"), px_per_um=px_per_um or answer.get("px_per_um"), colour_distance=answer.get("colour_distance"),
                scale=scale or answer.get("scale"),
                flagged=bool(answer["review"]), review_reason=answer.get("review_reason"),
                current_class=answer["class"], set_by="model")
    session.add(cell)
    return cell


@dataclass
class Imported:
    cells: int
    problems: list[tuple[str, str]]  # (file, why)
    several: int = 0  # images imported as one cell that show more than one white cell (each flagged)


SEVERAL = "{n} white cells in the image: only the one nearest its middle is classified; import it as a smear field to count each"


def _one_of_several(answer: dict) -> dict:
    """An image holding several white cells, imported as one cell, is flagged so: the case's count would miss the others."""
    n = answer["cells_seen"]
    return {**answer, "review": True, "review_reason": "; ".join(filter(None, [answer.get("review_reason"), SEVERAL.format(n=n)]))}


def import_cells(session, data_dir, case: Case, files: list[str], predictor, user: str) -> Imported:
    """Single-cell images: each pre-classified by the model (one at a time, so a bad file is refused alone)
    and stored beside the database."""
    # here, not at the top: torch is not for the review commands that never classify
    from wbc.image.framing import run_scale

    _writable(case)
    added, problems, several = 0, [], 0
    run = run_scale(files)  # one smear, one microscope: the cells take the case's scale
    for path in files:
        try:
            found = predictor.predict([path], px_per_um=run)[0]
            answer = _one_of_several(found.to_dict()) if found.several else found.to_dict()
            data = Path(path).read_bytes()
        except (WbcError, OSError) as e:
            problems.append((path, str(e)))
            continue
        add_cell(session, case, store(data_dir, data, Path(path).suffix or ".png"), str(path), answer)
        added, several = added + 1, several + found.several
    audit(session, case, user, "import", why=f"{added} cell images ({len(problems)} refused)")
    judge_case(session, case, predictor, user)
    return Imported(added, problems, several)


def judge_case(session, case: Case, predictor, user: str) -> str | None:
    """The case's cells judged as one run, as `wbc predict` judges a folder (wbc.infer.predictor.LabCheck): far from
    every training source, or holding blasts, every cell of the case is flagged with the reason, so each must be
    opened before sign-off (a smear with blasts needs every cell looked at); a "no white cell" on a smear takes the
    colours' reason, as in `wbc predict` (wbc.infer.predictor.run_reasons_of). How far the cells lie is also judged
    over the station's last cells of every case (`station_check`: a lab's microscope is out of the model's world in
    its small cases too). Said once in the audit trail; the reason, None when the case is not judged."""
    from wbc.infer.predictor import (
        BLAST_RUN_REASON,
        COLOUR_REASON,
        LAB_REASON,
        lab_check,
        run_reasons_of,
        with_reasons,
    )

    _flush(session)
    cells = session.scalars(select(Cell).where(Cell.case_id == case.id)).all()
    lab = lab_check(predictor, [{"class": c.model_class, "distance": c.distance, "colour_distance": c.colour_distance} for c in cells])
    reasons = lab.reasons()
    reasons |= {k: v for k, v in station_check(session, predictor).reasons().items() if k not in reasons}
    if not reasons:
        return None
    reason = "; ".join(reasons.values())
    for c in cells:
        own = [r for r in (c.review_reason or "").split("; ") if r and not r.startswith((LAB_REASON, COLOUR_REASON, BLAST_RUN_REASON))]
        # an earlier import's run reasons give way to the case's counts now
        if taken := run_reasons_of(c.model_class, c.scale, reasons, flagged=bool(own)):
            c.flagged, c.review_reason = True, with_reasons("; ".join(own), taken)
    audit(session, case, user, "judge", why=reason)
    _flush(session)
    return reason


def station_check(session, predictor):
    """A LabCheck, of how far they lie (features and colours) only, of the last LAB_WINDOW cells the station imported, every
    case's."""
    from wbc.infer.predictor import LAB_WINDOW, far_check, lab_check

    recent = session.execute(select(Cell.distance, Cell.model_class, Cell.colour_distance).order_by(Cell.id.desc()).limit(LAB_WINDOW)).all()
    return far_check(recent, lab_check(predictor).expected, predictor.spec, f"of the last {len(recent)} this station imported",
                     "the cells this station imported lately")


def import_fields(session, data_dir, case: Case, files: list[str], predictor, detector, user: str,
                  px_per_um: float | None = None) -> Imported:
    """Whole smear fields: every WBC found (wbc.count), classified, cut out and stored with its field and box."""
    from wbc.count.count import count_field
    from wbc.image.decode import decode
    from wbc.image.framing import crop_square

    _writable(case)
    added, problems = 0, []
    for path in files:
        try:
            fc = count_field(predictor, path, px_per_um, name=str(path), detector=detector)
            rgb = decode(path, max_pixels=detector.max_pixels) if fc.wbc else None
        except (WbcError, OSError) as e:
            problems.append((path, str(e)))
            continue
        for w in fc.wbc:
            x0, y0, x1, y1 = w["box"]
            side = max(x1 - x0, y1 - y0, FIELD_CROP_UM * fc.px_per_um)
            crop = crop_square(rgb, (x0 + x1) / 2, (y0 + y1) / 2, int(round(side)))
            ok, png = cv2.imencode(".png", np.ascontiguousarray(crop[..., ::-1]))
            add_cell(session, case, store(data_dir, png.tobytes(), ".png"), str(path), w, box=w["box"], px_per_um=fc.px_per_um,
                     scale=fc.scale)
            added += 1
    audit(session, case, user, "import", why=f"{added} white cells from {len(files) - len(problems)} fields ({len(problems)} refused)")
    judge_case(session, case, predictor, user)
    return Imported(added, problems)


def cell_in_case(session, case_id: int, cell_id: int) -> dict:
    """The stored image, the model's class and the scale it was framed at, of one cell of a case (NotFound otherwise)."""
    c = _cell(session, case_id, cell_id)
    return {"image": c.image, "model_class": c.model_class, "px_per_um": c.px_per_um}


def _cell(session, case_id: int, cell_id: int) -> Cell:
    cell = session.get(Cell, cell_id)
    if cell is None or cell.case_id != case_id:
        raise NotFound(f"case {case_id} has no cell {cell_id}")
    return cell


def reclassify(session, case_id: int, cell_ids: list[int], new_class: str, user: str, versions: list[int] | None = None,
               why: str | None = None) -> list[Cell]:
    """Set cells to `new_class`. `versions`: the row versions the reviewer saw; a cell changed since is a Conflict."""
    case = get_case(session, case_id)
    _writable(case)
    allowed = review_classes(_model_classes(case))
    if new_class not in allowed:
        raise WbcError(f"'{new_class}' is not a class here (one of {', '.join(allowed)})")
    cells = [_cell(session, case_id, i) for i in cell_ids]
    for k, cell in enumerate(cells):
        if versions is not None and cell.row_version != versions[k]:
            raise Conflict(f"cell {cell.id} was changed by {cell.set_by} since you loaded it (now {cell.current_class}): reload the case")
        if cell.current_class != new_class:
            audit(session, case, user, "reclassify", cell, cell.current_class, new_class, why)
            cell.current_class, cell.set_by = new_class, user
    _flush(session)
    return cells


def undo(session, case_id: int, user: str) -> Cell | None:
    """Reverse this user's latest reclassification in the case not yet undone (an audit row of its own)."""
    case = get_case(session, case_id)
    _writable(case)
    rows = session.scalars(select(Audit).where(Audit.case_id == case_id, Audit.user == user,
                                               Audit.action.in_(("reclassify", "undo"))).order_by(Audit.id.desc())).all()
    undone = {int(r.why.split("#", 1)[1]) for r in rows if r.action == "undo" and r.why and "#" in r.why}
    last = next((r for r in rows if r.action == "reclassify" and r.id not in undone), None)
    if last is None:
        return None
    cell = _cell(session, case_id, last.cell_id)
    audit(session, case, user, "undo", cell, cell.current_class, last.old, f"undoes #{last.id}")
    cell.current_class, cell.set_by = last.old, user
    _flush(session)
    return cell


def open_cell(session, case_id: int, cell_id: int, user: str) -> Cell:
    """A reviewer looked at this cell enlarged (a flagged cell must be, before the case can be signed)."""
    case = get_case(session, case_id)
    cell = _cell(session, case_id, cell_id)
    if cell.opened_by is None and case.status == "open":
        cell.opened_by = user
        audit(session, case, user, "open", cell)
        _flush(session)
    return cell


def _flush(session) -> None:
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        raise Conflict("another reviewer changed this case at the same moment: reload it") from None


def blockers(case: Case) -> list[str]:
    """Why the case cannot be signed yet (empty: it can)."""
    out = []
    unidentified = sum(c.current_class == UNIDENTIFIED for c in case.cells)
    if unidentified:
        out.append(f"{unidentified} cell(s) still UNIDENTIFIED: classify each")
    unopened = sum(c.flagged and c.opened_by is None for c in case.cells)
    if unopened:
        out.append(f"{unopened} flagged cell(s) never opened: look at each")
    if not case.cells:
        out.append("the case holds no cells")
    return out


def sign(session, case_id: int, user: User, password: str, meaning: str, kind: str = "primary") -> Signature:
    """Sign as `user`, who types the password again; refused while `blockers` remain, for a second signature
    by the first signer, or for a role that may not sign so."""
    case = get_case(session, case_id)
    if authenticate(session, user.name, password) is None or not user.active:
        raise WrongPassword(f"signature refused: wrong password for {user.name}")
    if user.role not in SIGNERS[kind]:
        raise Refused(f"a {kind} signature needs the role {' or '.join(SIGNERS[kind])}; {user.name} is a {user.role}")
    signatures = session.scalars(select(Signature).where(Signature.case_id == case_id)).all()
    if kind == "primary":
        _writable(case)
        problems = blockers(case)
        if problems:
            raise Refused(f"case {case.id} cannot be signed: " + "; ".join(problems))
        case.status = "signed"
    else:
        if case.status != "signed":
            raise Refused(f"case {case.id} needs its first signature before a second")
        if any(s.kind == "second" for s in signatures):
            raise Refused(f"case {case.id} holds its second signature already")
        if any(s.user == user.name for s in signatures):
            raise Refused(f"{user.name} signed case {case.id} already: the second signature must be another user's")
    sig = Signature(case_id=case.id, user=user.name, meaning=meaning, kind=kind)
    session.add(sig)
    audit(session, case, user.name, "sign" if kind == "primary" else "second_sign", why=meaning)
    _flush(session)
    return sig


def amend(session, case_id: int, user: str, why: str) -> Case:
    """A signed case's next version, open for review, its cells as signed; the signed version stays as it was."""
    old = get_case(session, case_id)
    if old.status != "signed":
        raise Refused(f"case {old.id} is {old.status}: only a signed case is amended")
    if not why.strip():
        raise WbcError("an amendment needs a reason")
    new = Case(reference=old.reference, specimen=old.specimen, created_by=user, status="open", version=old.version + 1, amends=old.id)
    session.add(new)
    session.flush()
    for c in old.cells:
        session.add(Cell(case_id=new.id, image=c.image, source=c.source, field_box=c.field_box, model_class=c.model_class,
                         probabilities=c.probabilities, distance=c.distance, px_per_um=c.px_per_um, colour_distance=c.colour_distance,
                         scale=c.scale, flagged=c.flagged, review_reason=c.review_reason,
                         current_class=c.current_class, set_by=c.set_by, opened_by=c.opened_by))
    old.status = "amended"
    audit(session, old, user, "amend", why=f"superseded by case {new.id}: {why}")
    audit(session, new, user, "amend", why=f"amends case {old.id}: {why}")
    _flush(session)
    return new


def _model_classes(case: Case) -> list[str]:
    names = {k for c in case.cells for k in c.probabilities}
    return sorted(names)


def differential_warm_up() -> None:
    count_differential(["NEUTROPHIL"], ["NEUTROPHIL"])


def differential(case: Case) -> dict:
    """Counts per class: white cells as % of white cells (wbc.count's differential: the alarms first, clinical
    order, Wilson 95% intervals), the rest per 100 white cells, and the tally toward the specimen's target
    (100 blood, 200 marrow)."""
    labels = [c.current_class for c in case.cells]
    white = [x for x in labels if x not in NOT_WHITE]
    n = len(white)
    rows = count_differential(white, [c for c in _model_classes(case) if c not in NOT_WHITE])
    other = [{"class": c, "count": labels.count(c), "per_100_white": 100 * labels.count(c) / n if n else None}
             for c in sorted(NOT_WHITE) if labels.count(c)]
    return {"white_cells": n, "target": SPECIMENS[case.specimen], "differential": rows, "not_white": other}


def cases_summary(session) -> list[dict]:
    counts = dict(session.execute(select(Cell.case_id, func.count()).group_by(Cell.case_id)).all())
    return [{"id": c.id, "reference": c.reference, "version": c.version, "specimen": c.specimen, "status": c.status,
             "cells": counts.get(c.id, 0), "created_by": c.created_by, "created_at": c.created_at.isoformat()}
            for c in session.scalars(select(Case).order_by(Case.id))]
