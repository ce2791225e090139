"""/api/v1/review/...: the review station over HTTP, with the same rules as `wbc review` (wbc.review.cases).

Every endpoint needs a login: the page holds an HttpOnly, SameSite=Strict session cookie and sends the CSRF
token it got at login in `X-CSRF-Token` with every change; scripts send `Authorization: Bearer <token>`.
Conflicts (a cell changed since it was loaded, a signed case) answer 409, a wrong password 403, a missing case
or cell 404, with a `detail` that says what to do."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Request,
    Response,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from wbc.errors import WbcError
from wbc.review import cases as C
from wbc.review import logins, tokens
from wbc.review.db import Audit, User
from wbc.review.export import case_csv, case_fhir, case_hl7
from wbc.review.images import resolve
from wbc.review.users import Locked, authenticate

COOKIE = "wbc_session"
DB_ID = 2**63 - 1  # the largest id a database integer holds: a bigger one is a 422, not a driver overflow
CaseId = Annotated[int, PathParam(ge=1, le=DB_ID)]
CellId = Annotated[int, PathParam(ge=1, le=DB_ID)]


class Login(BaseModel):
    name: str = Field(max_length=80)
    password: str = Field(max_length=200)


class NewCase(BaseModel):
    reference: str = Field(min_length=1, max_length=120)
    specimen: str = "blood"


class CellVersion(BaseModel):
    id: int = Field(ge=1, le=DB_ID)
    version: int = Field(ge=0, le=DB_ID)


class Reclassify(BaseModel):
    cells: list[CellVersion] = Field(min_length=1, max_length=1000)
    new_class: str = Field(alias="class", max_length=40)
    why: str | None = Field(None, max_length=500)


class Sign(BaseModel):
    password: str = Field(max_length=200)
    meaning: str = Field("reviewed and verified", min_length=1, max_length=200)
    second: bool = False


class Amend(BaseModel):
    why: str = Field(min_length=1, max_length=500)


def _http(e: WbcError) -> HTTPException:
    if isinstance(e, Locked):
        return HTTPException(429, str(e), headers={"Retry-After": str(e.seconds)})
    if isinstance(e, C.WrongPassword):
        return HTTPException(403, str(e))
    if isinstance(e, (C.Conflict, C.Refused)):
        return HTTPException(409, str(e))
    if isinstance(e, C.NotFound):
        return HTTPException(404, str(e))
    return HTTPException(400, str(e))


def _token(request: Request) -> tuple[str | None, bool]:
    """(a script's bearer token, else the page's session cookie; whether it was a bearer token)."""
    auth = request.headers.get("authorization", "")
    bearer = auth.lower().startswith("bearer ")
    return (auth[7:].strip() if bearer else request.cookies.get(COOKIE)), bearer


def cell_json(c) -> dict:
    return {"id": c.id, "image": f"/api/v1/review/images/{c.image}", "source": Path(c.source).name, "box": c.field_box,
            "model_class": c.model_class, "class": c.current_class, "set_by": c.set_by, "probabilities": c.probabilities,
            "flagged": c.flagged, "review_reason": c.review_reason, "distance": c.distance, "colour_distance": c.colour_distance,
            "px_per_um": c.px_per_um, "scale": c.scale, "opened": c.opened_by is not None,
            "version": c.row_version}


def case_json(case) -> dict:
    return {"id": case.id, "reference": case.reference, "version": case.version, "amends": case.amends, "specimen": case.specimen,
            "status": case.status, "created_by": case.created_by, "created_at": case.created_at.isoformat(),
            "classes": C.review_classes(C._model_classes(case)), "cells": [cell_json(c) for c in case.cells],
            **C.differential(case), "blockers": C.blockers(case)}


def router(Session, data_dir: str | Path, predictor, detector, gate, explainer, idle_minutes: float) -> APIRouter:
    api = APIRouter(prefix="/api/v1/review", tags=["review"])
    key = tokens.secret(data_dir)
    C.differential_warm_up()  # scipy's import (the Wilson intervals) costs ~1.5 s: at start, not in the first case opened

    def user(request: Request) -> User:
        """The logged-in user: a bearer token, or the session cookie plus its CSRF header on every change."""
        token, bearer = _token(request)
        uid = tokens.claimed_user(token)
        if uid is None:
            raise HTTPException(401, "log in first (POST /api/v1/review/login)")
        with Session() as s:
            u = s.get(User, uid)
            if u is None or not tokens.verify(key, token, tokens.stamp(u.password_hash)):
                raise HTTPException(401, "log in first (POST /api/v1/review/login): no session, or its password was changed")
            if not u.active:
                raise HTTPException(401, "this account is closed: log in as another user")
            why = logins.refusal(s, token, uid, idle_minutes)
            if why:
                raise HTTPException(401, f"{why}: log in again")
            s.expunge(u)
        # a script's bearer token is sent by the script alone; a cookie, by the browser to any page's request: it needs the CSRF header
        if not bearer and request.method not in ("GET", "HEAD") and request.headers.get("x-csrf-token") != tokens.csrf(key, token):
            raise HTTPException(403, "missing or wrong X-CSRF-Token header: reload the page and log in again")
        return u

    def run(fn, *args):
        """One transaction: commit on success, nothing written on any error."""
        try:
            with Session.begin() as s:
                return fn(s, *args)
        except WbcError as e:
            raise _http(e) from None

    _auth_routes(api, Session, key, user, idle_minutes)
    _case_routes(api, run, user)
    _edit_routes(api, run, user, data_dir, predictor, detector, gate)
    _export_routes(api, run, user, data_dir)
    _heatmap_route(api, run, user, data_dir, predictor, explainer)
    _adapt_routes(api, Session, user, data_dir, predictor)
    return api


def _auth_routes(api: APIRouter, Session, key: bytes, user, idle_minutes: float) -> None:
    @api.post("/login", responses={401: {"description": "wrong user name or password"},
                                   429: {"description": "too many wrong passwords for this name lately (Retry-After)"}})
    def login(body: Login, request: Request, response: Response):
        with Session.begin() as s:
            try:
                u = authenticate(s, body.name, body.password)
            except Locked as e:
                raise _http(e) from None
            if u is None:
                raise HTTPException(401, "wrong user name or password")
            token = logins.start(s, key, u)
            role = u.role
        # Secure when the page came over HTTPS (uvicorn reads X-Forwarded-Proto from a proxy on this machine)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                            max_age=tokens.HOURS * 3600)
        return {"user": body.name, "role": role, "token": token, "csrf": tokens.csrf(key, token), "idle_minutes": idle_minutes}

    @api.post("/logout")
    def logout(request: Request, response: Response, u: User = Depends(user)):
        """Ends the session on the server too: its cookie or token, wherever a copy is, stops working."""
        with Session.begin() as s:
            logins.end(s, _token(request)[0])
        response.delete_cookie(COOKIE)
        return {"user": u.name}

    @api.get("/me")
    def me(request: Request, u: User = Depends(user)):
        token = request.cookies.get(COOKIE)
        return {"user": u.name, "role": u.role, "csrf": tokens.csrf(key, token) if token else None, "idle_minutes": idle_minutes}


def _case_routes(api: APIRouter, run, user) -> None:
    @api.get("/cases")
    def list_cases(u: User = Depends(user)):
        return run(lambda s: C.cases_summary(s))

    @api.post("/cases", status_code=201)
    def new_case(body: NewCase, u: User = Depends(user)):
        return run(lambda s: case_json(C.create_case(s, body.reference, body.specimen, u.name)))

    @api.get("/cases/{case_id}")
    def get_case(case_id: CaseId, u: User = Depends(user)):
        return run(lambda s: case_json(C.get_case(s, case_id)))


def _edit_routes(api: APIRouter, run, user, data_dir, predictor, detector, gate) -> None:
    @api.post("/cases/{case_id}/import")
    def import_files(case_id: CaseId, files: list[UploadFile] = File(...), fields: bool = Form(False), u: User = Depends(user)):
        """Cell images (or whole smear fields with fields=true), pre-classified into the case; bad files listed."""
        if len(files) > gate.limits.max_files:
            raise HTTPException(413, f"{len(files)} files in one request: send at most {gate.limits.max_files} a request")
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, f in enumerate(files):
                p = Path(tmp) / f"{i:05d}_{Path(f.filename or 'image').name}"
                with p.open("wb") as out:
                    shutil.copyfileobj(f.file, out)
                paths.append(str(p))

            def go(s):
                case = C.get_case(s, case_id)
                if fields:
                    return C.import_fields(s, data_dir, case, paths, predictor, detector, u.name)
                return C.import_cells(s, data_dir, case, paths, predictor, u.name)

            r = run(go)
        return {"imported": r.cells, "refused": [{"file": Path(p).name.split("_", 1)[1], "error": e} for p, e in r.problems],
                "several_cells": r.several}

    @api.post("/cases/{case_id}/reclassify")
    def reclassify(case_id: CaseId, body: Reclassify, u: User = Depends(user)):
        cells = run(lambda s: [cell_json(c) for c in C.reclassify(s, case_id, [c.id for c in body.cells], body.new_class, u.name,
                                                                    [c.version for c in body.cells], body.why)])
        return {"cells": cells}

    @api.post("/cases/{case_id}/undo")
    def undo(case_id: CaseId, u: User = Depends(user)):
        return {"cell": run(lambda s: (lambda c: cell_json(c) if c else None)(C.undo(s, case_id, u.name)))}

    @api.post("/cases/{case_id}/cells/{cell_id}/open")
    def open_cell(case_id: CaseId, cell_id: CellId, u: User = Depends(user)):
        return run(lambda s: cell_json(C.open_cell(s, case_id, cell_id, u.name)))

    @api.post("/cases/{case_id}/sign")
    def sign(case_id: CaseId, body: Sign, u: User = Depends(user)):
        def go(s):
            sig = C.sign(s, case_id, s.get(User, u.id), body.password, body.meaning, "second" if body.second else "primary")
            return {"user": sig.user, "at": sig.at.isoformat(), "meaning": sig.meaning, "kind": sig.kind}
        return run(go)

    @api.post("/cases/{case_id}/amend", status_code=201)
    def amend(case_id: CaseId, body: Amend, u: User = Depends(user)):
        return run(lambda s: case_json(C.amend(s, case_id, u.name, body.why)))


def _export_routes(api: APIRouter, run, user, data_dir) -> None:
    @api.get("/cases/{case_id}/audit")
    def audit(case_id: CaseId, u: User = Depends(user)):
        def go(s):
            C.get_case(s, case_id)
            return [{"id": a.id, "cell": a.cell_id, "user": a.user, "at": a.at.isoformat(), "action": a.action, "old": a.old,
                     "new": a.new, "why": a.why} for a in s.scalars(select(Audit).where(Audit.case_id == case_id).order_by(Audit.id))]
        return run(go)

    @api.get("/cases/{case_id}/export.csv", response_class=PlainTextResponse)
    def export_csv(case_id: CaseId, u: User = Depends(user)):
        text = run(lambda s: case_csv(s, C.get_case(s, case_id)))
        return PlainTextResponse(text, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="case-{case_id}.csv"'})

    @api.get("/cases/{case_id}/export.fhir.json")
    def export_fhir(case_id: CaseId, u: User = Depends(user)):
        text = run(lambda s: case_fhir(s, C.get_case(s, case_id)))
        return PlainTextResponse(text, media_type="application/fhir+json")

    @api.get("/cases/{case_id}/export.hl7")
    def export_hl7(case_id: CaseId, u: User = Depends(user)):
        text = run(lambda s: case_hl7(s, C.get_case(s, case_id)))
        return PlainTextResponse(text, media_type="x-application/hl7-v2+er7")

    @api.get("/agreement")
    def agreement_view(u: User = Depends(user)):
        from wbc.review.feedback import agreement

        return run(agreement)

    @api.get("/images/{path:path}")
    def image(path: str, u: User = Depends(user)):
        try:
            f = resolve(data_dir, path)
        except ValueError:
            raise HTTPException(404, "no such image") from None
        if not f.is_file():
            raise HTTPException(404, "no such image")
        return FileResponse(f, headers={"Cache-Control": "private, max-age=86400, immutable"})


def _adapt_routes(api: APIRouter, Session, user, data_dir, predictor) -> None:
    """An admin starts `wbc review adapt` from the page: one job at a time, in a thread (the server keeps
    answering), its state polled. The adapted model is installed beside the database only when better; the
    running server keeps its model until restarted with it."""
    import threading
    import time

    job: dict = {"state": "idle"}
    lock = threading.Lock()

    def work(work_dir: Path):
        from wbc.review.feedback import adapt_from_reviews

        try:
            with Session() as s:
                r = adapt_from_reviews(s, data_dir, predictor.path, work_dir)
            job.update(state="done", result=r, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        except WbcError as e:
            job.update(state="failed", error=str(e))
        except Exception as e:  # a job thread has no caller to raise to: its state says what went wrong
            job.update(state="failed", error=f"{type(e).__name__}: {e}")

    @api.post("/adapt", status_code=202)
    def start_adapt(u: User = Depends(user)):
        if u.role != "admin":
            raise HTTPException(403, f"{u.name} is a {u.role}: only an admin adapts the lab's model")
        if predictor.path.suffix.lower() != ".safetensors":
            raise HTTPException(409, f"the server runs {predictor.path.name}: adapt needs the .safetensors model (wbc serve --model FILE.safetensors)")
        with lock:
            if job["state"] == "running":
                raise HTTPException(409, f"an adaptation started by {job['by']} is still running")
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            job.clear()
            job.update(state="running", by=u.name, started=stamp)
            threading.Thread(target=work, args=(Path(data_dir) / "adapt" / stamp,), daemon=True).start()
        return dict(job)

    @api.get("/adapt")
    def adapt_state(u: User = Depends(user)):
        return dict(job)


def _heatmap_route(api: APIRouter, run, user, data_dir, predictor, explainer) -> None:
    @api.get("/cases/{case_id}/cells/{cell_id}/heatmap", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "Grad-CAM over the model's view of the cell"}})
    def heatmap(case_id: CaseId, cell_id: CellId, u: User = Depends(user)):
        """What the model looked at for its pre-class: Grad-CAM over the view it classified (PNG)."""
        from wbc.image.decode import decode
        from wbc.image.framing import frame
        from wbc.infer.explain import overlay, png_bytes

        if explainer is None:
            raise HTTPException(409, "this server has no heat-maps (it runs an ONNX model alone): serve the .safetensors model")
        cell = run(lambda s: C.cell_in_case(s, case_id, cell_id))
        x = frame(decode(resolve(data_dir, cell["image"])), predictor.spec, cell["px_per_um"]).pixels  # as classified
        k = predictor.classes.index(cell["model_class"]) if cell["model_class"] in predictor.classes else None
        return Response(png_bytes(overlay(x, explainer.heatmap(x, k))), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})
