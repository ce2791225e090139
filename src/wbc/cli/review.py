"""`wbc review ...`: the lab's review station from the command line (cases, users, import, sign, export)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from wbc.cli import LAB, ModelOpt, app
from wbc.cli.render import bar, console, escape
from wbc.errors import WbcError, check_ranges

review_app = typer.Typer(help="The lab's review station: cases in a database, review, sign-off, export.", no_args_is_help=True)
users_app = typer.Typer(help="Users of the review station.", no_args_is_help=True)
review_app.add_typer(users_app, name="users")
app.add_typer(review_app, name="review", rich_help_panel=LAB)

DataDirOpt = typer.Option(None, "--data-dir", envvar="WBC_REVIEW_DATA", help="folder of the SQLite database and the cell images")
DbOpt = typer.Option(None, "--db", envvar="WBC_REVIEW_DB", help="database URL (e.g. postgresql+psycopg://user@host/wbc); default: SQLite in --data-dir")
UserOpt = typer.Option(..., "--user", "-u", help="who does it (a user of the station)")


def _open(data_dir: Optional[str], db: Optional[str]):
    from wbc.review.db import open_database

    if db and not data_dir:
        raise WbcError("--db needs --data-dir too: the folder the cell images are stored in")
    return open_database(data_dir, db)


def _password(name: str, confirm: bool = False) -> str:
    """From $WBC_PASSWORD (scripts), else asked without echo."""
    pw = os.environ.get("WBC_PASSWORD")
    return pw if pw is not None else typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=confirm)


def _user(session, name: str):
    from sqlalchemy import select

    from wbc.review.db import User

    u = session.scalar(select(User).where(User.name == name, User.active.is_(True)))
    if u is None:
        raise WbcError(f"no active user {name} (add one with `wbc review users add {name} --role technologist`)")
    return u


@users_app.command("add")
def users_add(name: str = typer.Argument(...), role: str = typer.Option("technologist", help="technologist, reviewer or admin"),
              data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Add a user (the password is asked twice, or read from $WBC_PASSWORD)."""
    from wbc.review.users import add_user, check_role

    check_role(role)  # before the database is opened or made
    Session = _open(data_dir, db)
    with Session.begin() as s:
        add_user(s, name, role, _password(name, confirm=True))
    console.print(f"user {name} ({role}) added", markup=False)


def _admin() -> str:
    """Who changes an account from the command line: the operating system's user (the station has no login here)."""
    import getpass

    try:
        return f"{getpass.getuser()} (command line)"
    except (KeyError, OSError):
        return "unknown (command line)"


@users_app.command("list")
def users_list(data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Every account: role, open or closed, last login, wrong passwords in the last 15 minutes (10 lock the name until they age)."""
    from wbc.review.users import list_users

    with _open(data_dir, db)() as s:
        rows = list_users(s)
    t = Table()
    for col in ("user", "role", "account", "since", "last login (UTC)", "wrong passwords lately"):
        t.add_column(col)
    for r in rows:
        t.add_row(Text(r["name"]), r["role"], "open" if r["active"] else "closed", r["created_at"][:10],
                  r["last_login"][:16].replace("T", " ") if r["last_login"] else "never", str(r["wrong_passwords_lately"]))
    console.print(t)


def _account(Session, change, said: str) -> None:
    """One account change in its own transaction, recorded with who made it (wbc.review.users), then said."""
    with Session.begin() as s:
        change(s, _admin())
    console.print(Text(said))


@users_app.command("password")
def users_password(name: str = typer.Argument(...), data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Set a new password (asked twice, or read from $WBC_PASSWORD): the old one stops working at once."""
    from wbc.review.users import named, set_password

    Session = _open(data_dir, db)
    with Session() as s:
        named(s, name)  # a mistyped name is said before a password is typed twice
    password = _password(name, confirm=True)
    _account(Session, lambda s, by: set_password(s, name, password, by), f"password of {name} changed")


@users_app.command("close")
def users_close(name: str = typer.Argument(...), data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Close an account (someone left the lab): it can no longer log in, sign or act; its signatures stay."""
    from wbc.review.users import set_active

    _account(_open(data_dir, db), lambda s, by: set_active(s, name, False, by), f"account {name} closed")


@users_app.command("reopen")
def users_reopen(name: str = typer.Argument(...), data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Open a closed account again."""
    from wbc.review.users import set_active

    _account(_open(data_dir, db), lambda s, by: set_active(s, name, True, by), f"account {name} open")


@users_app.command("role")
def users_role(name: str = typer.Argument(...), role: str = typer.Argument(..., help="technologist, reviewer or admin"),
               data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Change what a user may do (a reviewer signs second; an admin adapts the lab's model)."""
    from wbc.review.users import set_role

    _account(_open(data_dir, db), lambda s, by: set_role(s, name, role, by), f"{name} is now a {role}")


IMPORT_CHUNK_CELLS, IMPORT_CHUNK_FIELDS = 64, 8  # files a transaction


@review_app.command("import")
def review_import(case: str = typer.Argument(..., help="a case id, or a new sample reference (a case is made for it)"),
                  images: list[str] = typer.Argument(..., help="cell images (or smear fields with --fields), folders or globs"),
                  user: str = UserOpt, fields: bool = typer.Option(False, help="the images are whole smear fields: find and cut out every WBC"),
                  specimen: str = typer.Option("blood", help="blood or marrow (a new case)"), model: Optional[str] = ModelOpt,
                  detector: Optional[str] = typer.Option(None, help="with --fields: learned (default), classic or a detector file"),
                  data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Pre-classify images into a case (bad files are listed and skipped)."""
    from wbc.data.collect import collect_images

    found = collect_images(images).require("import")  # before torch and the model load
    from wbc.infer.predictor import load_fastest
    from wbc.review.cases import create_case, get_case, import_cells, import_fields

    predictor = load_fastest(model)
    Session = _open(data_dir, db)
    root = data_dir or "."
    with Session.begin() as s:
        who = _user(s, user).name
        c = get_case(s, int(case)) if case.isdigit() else create_case(s, case, specimen, who)
        case_id, ref = c.id, c.reference
    found_detector = None
    if fields:
        from wbc.count.detector import default_detector

        found_detector = default_detector(detector)
    # chunks, each its own transaction: the bar moves, and an interrupted import keeps the chunks done
    chunk = IMPORT_CHUNK_FIELDS if fields else IMPORT_CHUNK_CELLS
    cells, problems, several = 0, [], 0
    with bar() as progress:
        task = progress.add_task(f"{'counting' if fields else 'classifying'} into case {case_id}", total=len(found.files))
        for i in range(0, len(found.files), chunk):
            part = found.files[i : i + chunk]
            with Session.begin() as s:
                c = get_case(s, case_id)
                r = (import_fields(s, root, c, part, predictor, found_detector, who) if fields else import_cells(s, root, c, part, predictor, who))
            cells, problems, several = cells + r.cells, problems + r.problems, several + r.several
            progress.advance(task, len(part))
    for path, why in [*found.problems, *problems]:
        console.print(f"[red]skipped[/red] {escape(f'{path}: {why}')}", highlight=False, soft_wrap=True)
    console.print(f"case {case_id} ({escape(ref)}): {cells} cells imported" + (f", {len(problems) + len(found.problems)} files skipped" if problems or found.problems else ""))
    if several:
        console.print(f"note: {several} image(s) show more than one white cell: each was imported as one cell, flagged for review; "
                      "import whole smear fields with --fields to count every cell", markup=False, soft_wrap=True)


@review_app.command("cases")
def review_cases(data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """List the cases."""
    from wbc.review.cases import cases_summary

    with _open(data_dir, db)() as s:
        rows = cases_summary(s)
    t = Table(title="cases")
    for col in ("id", "reference", "version", "specimen", "status", "cells", "created by", "created"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["id"]), Text(r["reference"]), str(r["version"]), Text(r["specimen"] or ""), r["status"], str(r["cells"]), Text(r["created_by"]), r["created_at"][:19])
    console.print(t)


@review_app.command("show")
def review_show(case: int = typer.Argument(...), data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt,
                as_json: bool = typer.Option(False, "--json", help="print the differential as JSON")):
    """A case's differential (white cells as % of white cells, the rest per 100 white cells) and what blocks signing."""
    from wbc.review.cases import blockers, differential, get_case

    with _open(data_dir, db)() as s:
        c = get_case(s, case)
        d, why = differential(c), blockers(c)
        status, ref = c.status, c.reference
    if as_json:
        print(json.dumps({"case": case, "reference": ref, "status": status, **d, "blockers": why}, indent=2))
        return
    t = Table(title=f"case {case} ({ref}, {status}): {d['white_cells']} of {d['target']} white cells")
    for col in ("class", "count", "%", "95% CI (Wilson)"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for r in d["differential"]:
        t.add_row(r["class"], str(r["count"]), f"{r['percent']:.1f}" if r["percent"] is not None else "-",
                  f"{r['ci95'][0]:.1f}-{r['ci95'][1]:.1f}" if r["ci95"] else "-")
    for r in d["not_white"]:
        t.add_row(r["class"], str(r["count"]), "-", f"{r['per_100_white']:.1f} per 100 white cells" if r["per_100_white"] is not None else "-")
    console.print(t)
    for line in why:
        console.print(f"[yellow]cannot sign yet:[/yellow] {escape(line)}", highlight=False)


@review_app.command("sign")
def review_sign(case: int = typer.Argument(...), user: str = UserOpt, meaning: str = typer.Option("reviewed and verified", help="what you attest"),
                second: bool = typer.Option(False, help="the second signature (another reviewer)"),
                data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Sign a case (the password is asked again, or read from $WBC_PASSWORD)."""
    from wbc.review.cases import sign

    Session = _open(data_dir, db)
    with Session.begin() as s:
        sig = sign(s, case, _user(s, user), _password(user), meaning, "second" if second else "primary")
        at = sig.at
    console.print(f"case {case} signed by {user} ({'second' if second else 'primary'}, {meaning}) at {at:%Y-%m-%d %H:%M:%S}", markup=False)


@review_app.command("export")
def review_export(case: int = typer.Argument(...), out: Optional[Path] = typer.Option(None, "--out", "-o", help="file to write (default: print)"),
                  format: str = typer.Option("csv", "--format", "-f", help="csv, fhir (R4 Bundle: DiagnosticReport + Observations, JSON) or hl7 (v2.5.1 ORU^R01)"),
                  data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """A case's differential for a lab system: CSV, FHIR or HL7 v2 (LOINC-coded, per 100 white cells)."""
    from wbc._util.io import atomic_write_text
    from wbc.review.cases import get_case
    from wbc.review.export import case_csv, case_fhir, case_hl7

    writers = {"csv": case_csv, "fhir": case_fhir, "hl7": case_hl7}
    if format not in writers:
        raise WbcError(f"--format must be csv, fhir or hl7, not '{format}'")
    with _open(data_dir, db)() as s:
        text = writers[format](s, get_case(s, case))
    if out:
        atomic_write_text(out, text)
        console.print(f"written {out}", markup=False)
    else:
        print(text.replace("\r", "\n") if format == "hl7" else text, end="" if format == "csv" else "\n")


@review_app.command("adapt")
def review_adapt(model: Optional[str] = ModelOpt, work: Path = typer.Option(Path("runs/review-adapt"), help="folder for the exported cells and the candidate"),
                 holdout: float = typer.Option(0.3, help="share of each class's verified cells kept out of the adaptation to judge it"),
                 data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Adapt the model to the lab's verified cells (signed cases); it becomes the lab's model only if it is
    more accurate on verified cells it never saw."""
    check_ranges(("--holdout", holdout, 0 <= holdout < 1, "at least 0 and below 1 (such as 0.3)"))
    from wbc.infer.predictor import shipped_model_path
    from wbc.review.feedback import adapt_from_reviews

    if not data_dir:
        raise WbcError("give --data-dir: the review station's folder")
    with _open(data_dir, db)() as s:
        with console.status("adapting to the verified cells"):
            r = adapt_from_reviews(s, data_dir, model or shipped_model_path(), work, holdout)
    held = sum(r["counts"]["heldout"].values())
    console.print(f"{sum(r['counts']['train'].values())} verified cells adapted on, {held} held out: accuracy {r['before']:.1%} before, "
                  f"{r['after']:.1%} after")
    console.print(f"installed as the lab's model: {r['lab_model']} (wbc serve --model {r['lab_model']})" if r["installed"]
                  else "not better on the held-out cells: the model stays as it was", markup=False)


@review_app.command("agreement")
def review_agreement(data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt):
    """Per class, over signed cases: how often the model's pre-classification was kept (sensitivity, predictive value)."""
    from wbc.review.feedback import agreement

    with _open(data_dir, db)() as s:
        a = agreement(s)
    t = Table(title=f"signed cases: {a['cells']} cells, {a['kept']} pre-classifications kept"
                    + (f" ({a['accepted_share']:.1%})" if a["accepted_share"] is not None else ""))
    for col in ("class", "final", "model called", "agreed", "sensitivity", "predictive value"):
        t.add_column(col, justify="left" if col == "class" else "right")
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    for r in a["per_class"]:
        t.add_row(r["class"], str(r["final"]), str(r["called"]), str(r["agreed"]), pct(r["sensitivity"]), pct(r["predictive_value"]))
    console.print(t)
