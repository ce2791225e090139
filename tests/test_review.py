"""The review station's database layer, on SQLite and on a real PostgreSQL server started for the tests:
migrations from empty, users (argon2), import of real cells and smear fields through the shipped model and
detector, reclassify / undo with version checks, sign-off rules, amendments, the append-only audit trail
(refused by the database itself), CSV export and the `wbc review` commands."""

import csv
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import DATA, KAGGLE, free_port, pbc_images, run_cli

import wbc
from wbc.errors import WbcError
from wbc.infer.predictor import UNIDENTIFIED
from wbc.review import cases as C
from wbc.review.db import Audit, Cell, open_database
from wbc.review.export import LOINC, case_csv, case_fhir, case_hl7
from wbc.review.users import add_user, authenticate

PG_BIN = next((p for p in (Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14")) if (p / "initdb").is_file()), None)


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server (Debian's package, installed by .ci/run), trust auth on 127.0.0.1."""
    if PG_BIN is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="wbc-pg-"))  # not under pytest's 0700 folders: the server runs as postgres
    data, port = root / "data", free_port()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    if as_pg:
        shutil.chown(root, "postgres")
    subprocess.run([*as_pg, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text("CREATE ROLE wbc_app LOGIN"))
        c.execute(sa.text("CREATE DATABASE wbc OWNER wbc_app"))
    engine.dispose()
    yield f"postgresql+psycopg://wbc_app@127.0.0.1:{port}/wbc"
    subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


APPEND_ONLY = ("audit", "signatures", "account_events")  # the database refuses UPDATE and DELETE on them


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """(session factory, data folder), the schema made by the migrations from empty."""
    url = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    Session = open_database(tmp_path / "station", url)
    if url:  # each test its own empty schema
        with Session.begin() as s:
            for t in ("signatures", "audit", "cells", "cases", "logins", "users", "account_events"):
                s.execute(sa.text(f"ALTER TABLE {t} DISABLE TRIGGER USER")) if t in APPEND_ONLY else None
                s.execute(sa.text(f"DELETE FROM {t}"))
                s.execute(sa.text(f"ALTER TABLE {t} ENABLE TRIGGER USER")) if t in APPEND_ONLY else None
    return Session, tmp_path / "station"


@pytest.fixture(scope="module")
def model():
    return wbc.load_model()


def _cells() -> list[str]:
    return [str(f) for f in [*sorted((KAGGLE / "TEST" / "NEUTROPHIL").glob("*.jpeg"))[:4], *sorted((KAGGLE / "TEST" / "LYMPHOCYTE").glob("*.jpeg"))[:3],
                             *pbc_images("test", "PLATELET")[:1], *sorted((DATA / "munich-aml" / "test" / "BLAST").glob("*.jpg"))[:2]]]


def _users(Session):
    with Session.begin() as s:
        add_user(s, "ana", "technologist", "ana-password")
        add_user(s, "ben", "reviewer", "ben-password")


def test_migrations_users_and_the_audit_trail_is_append_only(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from wbc.review.db import Base

    Session, _ = db
    with Session() as s:  # the migrations make the schema the code maps, on both engines
        assert compare_metadata(MigrationContext.configure(s.connection()), Base.metadata) == []
    _users(Session)
    with Session.begin() as s:
        assert authenticate(s, "ana", "ana-password").role == "technologist"
        assert authenticate(s, "ana", "wrong") is None and authenticate(s, "nobody", "ana-password") is None
        hashed = s.execute(sa.text("SELECT password_hash FROM users WHERE name = 'ana'")).scalar_one()
        assert hashed.startswith("$argon2id$") and "ana-password" not in hashed
        with pytest.raises(WbcError, match="exists already"):
            add_user(s, "ana", "admin", "another-password")
        with pytest.raises(WbcError, match="too short"):
            add_user(s, "cleo", "admin", "short")
        case = C.create_case(s, "S-1", "blood", "ana")
        case_id = case.id
    with Session.begin() as s:
        authenticate(s, "ben", "a wrong one")  # an account event
    for sql in ("UPDATE audit SET user = 'mallory'", "DELETE FROM audit",
                "UPDATE account_events SET name = 'mallory'", "DELETE FROM account_events"):
        sql = sql.replace("user", '"user"')
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with Session.begin() as s:
                s.execute(sa.text(sql))
    with Session() as s:
        rows = s.scalars(sa.select(Audit).where(Audit.case_id == case_id)).all()
        assert [(r.user, r.action) for r in rows] == [("ana", "create")]


def test_a_name_guessed_at_is_refused_for_a_while(db, monkeypatch):
    """Ten wrong passwords for a name within 15 minutes: the next try is refused, the right password too, saying when
    to try again; each wrong one stays on record even when its caller's transaction rolls back (a refused signature)
    or had written first; tries older than the window no longer count; another name is not affected."""
    from datetime import timedelta

    from wbc.review import users
    from wbc.review.db import AccountEvent, now
    from wbc.review.users import MAX_FAILURES, WINDOW, Locked

    Session, _ = db
    _users(Session)
    for i in range(MAX_FAILURES - 1):
        with pytest.raises(RuntimeError):
            with Session.begin() as s:
                assert authenticate(s, "ana", f"guess-{i}") is None
                raise RuntimeError("the caller gives up: its transaction rolls back")
    with Session.begin() as s:
        C.create_case(s, "S-9", "blood", "ben")  # written first: on SQLite the record joins this transaction
        assert authenticate(s, "ana", "guess-last") is None
    with Session.begin() as s:
        with pytest.raises(Locked, match=r"10 wrong passwords for ana within 15 minutes: try again in 15 minute"):
            authenticate(s, "ana", "ana-password")
        assert authenticate(s, "ben", "ben-password").name == "ben"
        assert s.scalar(sa.select(sa.func.count()).select_from(AccountEvent).where(AccountEvent.name == "ana")) == MAX_FAILURES
        lately = {u["name"]: u["wrong_passwords_lately"] for u in users.list_users(s)}  # what `wbc review users list` shows
        assert lately["ana"] == MAX_FAILURES and lately["ben"] == 0
    monkeypatch.setattr(users, "now", lambda: now() + WINDOW + timedelta(seconds=1))  # a quarter of an hour on
    with Session.begin() as s:
        assert {u["name"]: u["wrong_passwords_lately"] for u in users.list_users(s)}["ana"] == 0
        assert authenticate(s, "ana", "ana-password").name == "ana"
    monkeypatch.undo()  # the clock back: the ten wrong passwords lie within the window again, and lock the name
    with Session.begin() as s:  # an admin's new password lifts the lock at once (before, the user waited it out)
        with pytest.raises(Locked):
            authenticate(s, "ana", "ana-password")
        users.set_password(s, "ana", "a-new-password", "ben")
    with Session.begin() as s:
        assert authenticate(s, "ana", "a-new-password").name == "ana"
        assert {u["name"]: u["wrong_passwords_lately"] for u in users.list_users(s)}["ana"] == 0


def test_a_database_of_the_first_schema_is_migrated_and_keeps_its_rows(tmp_path):
    """A station made by an older wbc (schema 0001) opens with the newest one: its cells are kept, the scale, colour and
    scale-kind columns added empty (its heat-maps measure the scale as before; its old cells are not judged by their colours)."""
    from wbc.review.db import database_url, make_engine, upgrade

    engine = make_engine(database_url(tmp_path / "old", None))
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO cases (id, reference, version, specimen, status, created_by, created_at, row_version) "
                             "VALUES (1, 'OLD-1', 1, 'blood', 'open', 'ana', '2026-11-30 10:00:00', 1)"))
        conn.execute(sa.text("INSERT INTO cells (id, case_id, image, source, model_class, probabilities, flagged, current_class, "
                             "set_by, row_version) VALUES (1, 1, 'x.png', 'x.jpg', 'NEUTROPHIL', '{}', 0, 'NEUTROPHIL', 'model', 1)"))
    engine.dispose()
    Session = open_database(tmp_path / "old")
    with Session() as s:
        assert s.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0006"
        assert s.execute(sa.text("SELECT current_class, px_per_um, colour_distance, scale FROM cells WHERE id = 1")).one() == (
            "NEUTROPHIL", None, None, None)


def test_a_case_from_import_to_signature(db, model):
    Session, data_dir = db
    _users(Session)
    files = _cells()
    bad = data_dir.parent / "notes.jpg"
    bad.write_text("not an image")
    with Session.begin() as s:
        case = C.create_case(s, "S-2", "blood", "ana")
        r = C.import_cells(s, data_dir, case, [*files, str(bad)], model, "ana")
        case_id = case.id
    assert r.cells == len(files) and len(r.problems) == 1 and "notes.jpg" in r.problems[0][0]
    with Session.begin() as s:
        case = C.get_case(s, case_id)
        assert all((data_dir / c.image).is_file() for c in case.cells)
        assert {c.model_class for c in case.cells[:4]} <= set(model.classes) | {UNIDENTIFIED}
        first = case.cells[0]
        # a stale version (somebody changed the cell since) is a conflict, nothing written
        with pytest.raises(C.Conflict):
            C.reclassify(s, case_id, [first.id], "MONOCYTE", "ana", versions=[first.row_version + 1])
        C.reclassify(s, case_id, [first.id], "MONOCYTE", "ana", versions=[first.row_version], why="kidney-shaped nucleus")
        C.reclassify(s, case_id, [c.id for c in case.cells[1:3]], "LYMPHOCYTE", "ana")
        assert C.undo(s, case_id, "ana").id in {c.id for c in case.cells[1:3]}
        with pytest.raises(WbcError, match="not a class here"):
            C.reclassify(s, case_id, [first.id], "DRAGON", "ana")
        # the platelet and a smudge stay out of the white-cell denominator
        C.reclassify(s, case_id, [case.cells[-3].id], "PLATELET", "ana")
        C.reclassify(s, case_id, [case.cells[-1].id], UNIDENTIFIED, "ana")
        d = C.differential(case)
        assert d["white_cells"] == len(files) - 1 and d["target"] == 100
        lead = [r["class"] for r in d["differential"]][:2]  # the alarms lead: BLAST (when present), then UNIDENTIFIED
        assert UNIDENTIFIED in lead and set(lead) <= {"BLAST", UNIDENTIFIED} and d["not_white"][0]["class"] == "PLATELET"
        assert abs(sum(r["percent"] for r in d["differential"]) - 100) < 1e-6
        ana = authenticate(s, "ana", "ana-password")
        with pytest.raises(C.Refused, match="UNIDENTIFIED"):
            C.sign(s, case_id, ana, "ana-password", "reviewed")
        C.reclassify(s, case_id, [case.cells[-1].id], "BLAST" if "BLAST" in model.classes else "MONOCYTE", "ana")
        for c in case.cells:
            if c.flagged:
                C.open_cell(s, case_id, c.id, "ana")
        with pytest.raises(C.Refused, match="wrong password"):
            C.sign(s, case_id, ana, "guess", "reviewed")
        C.sign(s, case_id, ana, "ana-password", "reviewed and verified")
        with pytest.raises(C.Refused, match="read-only"):
            C.reclassify(s, case_id, [first.id], "NEUTROPHIL", "ana")
        with pytest.raises(C.Refused, match="needs the role reviewer or admin"):
            C.sign(s, case_id, ana, "ana-password", "second", "second")
        add_user(s, "ana2", "reviewer", "ana2-password")
        C.sign(s, case_id, authenticate(s, "ben", "ben-password"), "ben-password", "second review", "second")
        with pytest.raises(C.Refused, match="second signature already"):
            C.sign(s, case_id, authenticate(s, "ana2", "ana2-password"), "ana2-password", "third", "second")
        text = case_csv(s, case)
        amended = C.amend(s, case_id, "ben", "late correction")
        assert amended.version == 2 and amended.amends == case_id and len(amended.cells) == len(case.cells)
        assert case.status == "amended"
        fhir_text, hl7_text = case_fhir(s, case), case_hl7(s, case)
    _check_fhir(fhir_text, case_id)
    _check_hl7(hl7_text)
    rows = list(csv.DictReader(io.StringIO(text)))
    mono = next(r for r in rows if r["class"] == "MONOCYTE")
    assert int(mono["count"]) >= 1 and "ana" in mono["signatures"] and "ben" in mono["signatures"]
    with Session() as s:
        actions = [a.action for a in s.scalars(sa.select(Audit).where(Audit.case_id == case_id).order_by(Audit.id))]
    assert actions[:2] == ["create", "import"] and "undo" in actions and actions[-3:] == ["sign", "second_sign", "amend"]


def test_typed_text_in_a_csv_export_stays_text_in_a_spreadsheet(tmp_path, model):
    """A case reference typed as a formula (=HYPERLINK, +, -, @) is exported with a leading quote, as OWASP advises
    against CSV injection, so a spreadsheet shows it instead of running it; a plain reference is left as typed."""
    Session = open_database(tmp_path / "station")
    _users(Session)
    for ref, shown in (('=HYPERLINK("http://evil.example","open")', '\'=HYPERLINK("http://evil.example","open")'),
                       ("+1-555", "'+1-555"), ("@SUM(A1)", "'@SUM(A1)"), ("S-2026-17", "S-2026-17")):
        with Session.begin() as s:
            case = C.create_case(s, ref, "blood", "ana")
            C.import_cells(s, tmp_path / "station", case, _cells()[:2], model, "ana")
            rows = list(csv.DictReader(io.StringIO(case_csv(s, case))))
        assert rows and {r["reference"] for r in rows} == {shown}


def test_a_case_with_blasts_has_every_cell_flagged_before_sign_off(tmp_path, model):
    """A case is judged as one run: 20 Munich neutrophils and 6 blasts make a case with blasts, so every cell is
    flagged with the reason and must be opened before sign-off, said once in the audit trail; 24 normal PBC cells
    are not judged."""
    Session = open_database(tmp_path / "station")
    _users(Session)
    munich = DATA / "munich-aml" / "test"
    for name, files, judged in (("S-blasts", [*sorted((munich / "NEUTROPHIL").glob("*.jpg"))[:20], *sorted((munich / "BLAST").glob("*.jpg"))[:6]], True),
                                ("S-normal", [f for c in ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE") for f in pbc_images("test", c)[:8]], False)):
        with Session.begin() as s:
            case = C.create_case(s, name, "blood", "ana")
            C.import_cells(s, tmp_path / "station", case, [str(f) for f in files], model, "ana")
            cells = list(case.cells)
            actions = [r.action for r in s.scalars(sa.select(Audit).where(Audit.case_id == case.id)).all()]
            assert len(cells) == len(files)
            if judged:
                assert all(c.flagged and "blasts in this run" in c.review_reason for c in cells) and actions.count("judge") == 1
                assert f"{len(cells)} flagged cell(s) never opened" in " ".join(C.blockers(case))
            else:
                assert not any("blasts in this run" in (c.review_reason or "") or "lab unlike" in (c.review_reason or "") for c in cells)
                assert "judge" not in actions


def test_small_cases_of_a_lab_out_of_the_models_world_are_judged_over_the_station(tmp_path):
    """A model to which most PBC cells look unlike its training cells (its near distance cut to the first quartile of
    theirs): cases of 8 cells are too small to judge alone, but the station judges its last cells of every case as
    one lab, so from the third case on every cell is flagged, saying so in the audit trail."""
    from wbc.models.io import save_model

    files = [str(f) for c in ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL") for f in pbc_images("test", c)[:8]]
    strict = wbc.load_model()
    d = sorted(p.distance for p in strict.predict(files))
    strict.model.spec.near_distance = d[len(d) // 4]
    save_model(strict.model, tmp_path / "strict.safetensors", strict.meta["info"])
    strict = wbc.load_model(tmp_path / "strict.safetensors")
    Session = open_database(tmp_path / "station")
    _users(Session)
    judged = []
    for k in range(4):
        with Session.begin() as s:
            case = C.create_case(s, f"S-{k}", "blood", "ana")
            C.import_cells(s, tmp_path / "station", case, files[8 * k : 8 * k + 8], strict, "ana")
            why = [r.why for r in s.scalars(sa.select(Audit).where(Audit.case_id == case.id, Audit.action == "judge")).all()]
            flagged = [c.flagged and "lab unlike the training sources" in (c.review_reason or "") for c in case.cells]
            judged.append(bool(why) and all(flagged))
            assert bool(why) == any(flagged)
            assert not why or "this station imported" in why[0]
    assert judged == [False, False, True, True]  # 8 and 16 cells: too few to judge; then 24 and 32


def test_smear_fields_are_cut_into_cells_with_their_box(db, model):
    from wbc.count.detector import default_detector

    Session, data_dir = db
    fields = [str(DATA / "bccd" / "JPEGImages" / f"BloodImage_0000{i}.jpg") for i in (0, 1)]
    with Session.begin() as s:
        case = C.create_case(s, "S-3", "marrow", "ana")
        r = C.import_fields(s, data_dir, case, fields, model, default_detector(None), "ana")
        assert r.cells >= 2 and not r.problems
        assert all(c.field_box and len(c.field_box) == 4 and c.source in fields for c in case.cells)
        assert all(10 < c.px_per_um < 18 for c in case.cells)  # the field's scale (BCCD: about 14 px/um), kept with each cut cell
        assert C.differential(case)["target"] == 200
        # a whole field imported as one cell (two white cells in it): flagged so, the case's count would miss one
        whole = str(DATA / "bccd" / "JPEGImages" / "BloodImage_00010.jpg")  # train list
        r = C.import_cells(s, data_dir, case, [whole], model, "ana")
        assert r.cells == 1 and r.several == 1
        cell = s.scalar(sa.select(Cell).where(Cell.source == whole))
        assert cell.flagged and "2 white cells in the image: only the one nearest its middle is classified" in cell.review_reason


def test_accounts_are_managed_from_the_command_line(tmp_path):
    """An admin lists the accounts (with their recent wrong passwords), sets a forgotten password, changes a role and
    closes the account of someone who left: it can no longer log in or sign; it is opened again by name. Each change
    is on record with who made it."""
    from wbc.review.db import AccountEvent
    from wbc.review.users import list_users, set_password, set_role

    d = str(tmp_path / "station")
    run_cli("review", "users", "add", "ana", "--data-dir", d, env={"WBC_PASSWORD": "ana-password"})
    run_cli("review", "users", "add", "ben", "--role", "reviewer", "--data-dir", d, env={"WBC_PASSWORD": "ben-password"})
    Session = open_database(d)
    with Session.begin() as s:
        assert authenticate(s, "ana", "a-guess-1") is None and authenticate(s, "ana", "a-guess-2") is None
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in run_cli("review", "users", "list", "--data-dir", d).stderr.splitlines()]
    rows = {r[0]: r for r in cells if r and r[0] in ("ana", "ben")}
    assert rows["ana"][1:3] == ["technologist", "open"] and rows["ana"][-1] == "2" and rows["ben"][-1] == "0", rows
    run_cli("review", "users", "password", "ana", "--data-dir", d, env={"WBC_PASSWORD": "a-new-password"})
    run_cli("review", "users", "role", "ana", "reviewer", "--data-dir", d)
    run_cli("review", "users", "close", "ben", "--data-dir", d)
    with Session() as s:
        assert authenticate(s, "ana", "ana-password") is None and authenticate(s, "ana", "a-new-password").role == "reviewer"
        assert authenticate(s, "ben", "ben-password") is None
    p = run_cli("review", "sign", "1", "--user", "ben", "--data-dir", d, env={"WBC_PASSWORD": "ben-password"}, check=False)
    assert p.returncode != 0 and "no active user ben" in p.stderr and "Traceback" not in p.stderr
    with Session() as s:
        assert {u["name"]: u["active"] for u in list_users(s)} == {"ana": True, "ben": False}
    run_cli("review", "users", "reopen", "ben", "--data-dir", d)
    with Session() as s:
        assert authenticate(s, "ben", "ben-password").name == "ben"
        events = [(e.name, e.event, e.by) for e in s.scalars(sa.select(AccountEvent).order_by(AccountEvent.id))]
    assert [e[:2] for e in events] == [("ana", "wrong password")] * 2 + [("ana", "password changed"), ("ana", "role reviewer"),
                                                                        ("ben", "closed"), ("ana", "wrong password"),  # the old one
                                                                        ("ben", "wrong password"), ("ben", "reopened")]  # closed
    assert all(by.endswith("(command line)") for _, what, by in events if what != "wrong password")
    p = run_cli("review", "users", "close", "nobody", "--data-dir", d, check=False)
    assert p.returncode == 2 and "no user nobody on this station" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = run_cli("review", "users", "password", "nobody", "--data-dir", d, check=False)  # said before the password is asked
    assert p.returncode == 2 and "no user nobody on this station" in p.stderr and "password for" not in p.stderr, p.stderr
    with Session() as s:
        with pytest.raises(WbcError, match="--role must be one of"):
            set_role(s, "ana", "boss", "test")
        with pytest.raises(WbcError, match="too short"):
            set_password(s, "ana", "short", "test")


def test_review_commands(tmp_path):
    d = str(tmp_path / "station")
    env = {"WBC_PASSWORD": "ana-password"}
    run_cli("review", "users", "add", "ana", "--role", "technologist", "--data-dir", d, env=env)
    p = run_cli("review", "users", "add", "ana", "--data-dir", d, env=env, check=False)
    assert p.returncode == 2 and "exists already" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("review", "import", "SAMPLE-9", *_cells()[:3], str(tmp_path / "missing.jpg"), "--user", "ana", "--data-dir", d)
    assert "case 1 (SAMPLE-9): 3 cells imported" in p.stderr and "missing.jpg" in p.stderr
    assert "SAMPLE-9" in run_cli("review", "cases", "--data-dir", d).stderr
    shown = run_cli("review", "show", "1", "--json", "--data-dir", d).stdout
    assert '"white_cells": 3' in shown
    out = tmp_path / "case.csv"
    run_cli("review", "export", "1", "--out", str(out), "--data-dir", d)
    assert out.read_text().startswith("case,reference")
    assert '"resourceType": "Bundle"' in run_cli("review", "export", "1", "--format", "fhir", "--data-dir", d).stdout
    assert run_cli("review", "export", "1", "--format", "hl7", "--data-dir", d).stdout.startswith("MSH|")
    p = run_cli("review", "export", "1", "--format", "pdf", "--data-dir", d, check=False)
    assert p.returncode == 2 and "--format must be csv, fhir or hl7" in p.stderr
    p = run_cli("review", "sign", "1", "--user", "ana", "--data-dir", d, env={"WBC_PASSWORD": "wrong-password"}, check=False)
    assert p.returncode == 2 and "wrong password" in p.stderr
    p = run_cli("review", "show", "1", "--data-dir", str(tmp_path / "x"), "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", check=False)
    assert p.returncode == 2 and "cannot open the review database" in p.stderr and "Traceback" not in p.stderr


def test_verified_cells_feed_adapt_and_install_only_a_better_model(tmp_path, model):
    """PBC cells (another lab's microscope) reviewed to their true class and signed; `wbc review adapt` learns
    from 70% of them and reports before/after on the rest; the lab model exists exactly when it is better."""
    d = tmp_path / "station"
    Session = open_database(d)
    truth = {}
    with Session.begin() as s:
        add_user(s, "ana", "technologist", "ana-password")
        case = C.create_case(s, "PBC-1", "blood", "ana")
        files = [str(f) for c in ("NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL", "MONOCYTE") for f in pbc_images("train", c)[5:15]]
        C.import_cells(s, d, case, files, model, "ana")
        for cell in case.cells:
            truth[cell.id] = Path(cell.source).parent.name
            C.reclassify(s, case.id, [cell.id], truth[cell.id], "ana", why="verified")
            C.open_cell(s, case.id, cell.id, "ana")
        C.sign(s, case.id, authenticate(s, "ana", "ana-password"), "ana-password", "verified")
    from wbc.review.feedback import agreement

    with Session() as s:
        a = agreement(s)
    assert a["cells"] == 40 and 0 <= a["kept"] <= 40
    neut = next(r for r in a["per_class"] if r["class"] == "NEUTROPHIL")
    assert neut["final"] == 10 and neut["agreed"] <= min(neut["final"], neut["called"])
    assert "sensitivity" in run_cli("review", "agreement", "--data-dir", str(d)).stderr
    p = run_cli("review", "adapt", "--data-dir", str(d), "--work", str(tmp_path / "work"))
    assert "28 verified cells adapted on, 12 held out" in p.stderr
    installed = (d / "lab_model.safetensors").is_file()
    assert installed == ("installed as the lab's model" in p.stderr)
    assert sorted(p.name for p in (tmp_path / "work" / "heldout").iterdir()) == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def _check_fhir(text: str, case_id: int) -> None:
    """The bundle parses back with fhir.resources; every Observation a LOINC code of ours, in %, final."""
    from fhir.resources.R4B.bundle import Bundle

    b = Bundle.model_validate_json(text)
    report, *obs = [e.resource for e in b.entry]
    assert report.__resource_type__ == "DiagnosticReport" and report.code.coding[0].code == "24318-8" and report.status == "final"
    assert len(report.result) == len(obs) >= 5
    codes = {o.code.coding[0].code: o for o in obs}
    assert set(codes) <= {c for c, _ in LOINC.values()} and "26485-3" in codes  # the MONOCYTE set by ana
    assert all(o.valueQuantity.code == "%" and o.valueQuantity.system == "http://unitsofmeasure.org" for o in obs)
    assert abs(sum(float(o.valueQuantity.value) for o in obs if o.code.coding[0].code != "34992-8") - 100) < 0.6
    assert "PLATELET" in (report.conclusion or "")  # uncoded classes said, not dropped


def _check_hl7(text: str) -> None:
    """The ORU^R01 parses back under hl7apy's strict validation; one OBX per coded class."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    m = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert m.validate() and m.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    obx = [seg for seg in text.split("\r") if seg.startswith("OBX|")]
    assert len(obx) >= 5 and all("^LN|" in seg and "|%^percent^UCUM|" in seg and seg.split("|")[11] == "F" for seg in obx)
    assert any(seg.startswith("NTE|") and "PLATELET" in seg for seg in text.split("\r"))
