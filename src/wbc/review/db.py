"""The review station's tables and how to open its database.

SQLite (one file under the user's data folder, WAL so readers never block the writer) by default;
PostgreSQL by URL for several server processes or machines. The schema is made and upgraded only by the
Alembic migrations in `migrations/`, never by `create_all`, so both engines hold the same schema and a lab's
database upgrades in place. The audit, signature and account-event tables are append-only in the database
itself (triggers refuse UPDATE and DELETE), not only in this code.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
    sessionmaker,
)

from wbc.errors import WbcError

log = logging.getLogger(__name__)
DB_FILE = "wbc-review.sqlite"


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(dt: datetime) -> datetime:
    """`dt` with its time zone: SQLite hands back the UTC times it stored without one."""
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # technologist | reviewer | admin
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(120), index=True)  # the sample / slide reference
    version: Mapped[int] = mapped_column(Integer, default=1)  # an amendment is a new row, version + 1
    amends: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True)
    specimen: Mapped[str] = mapped_column(String(20), default="blood")  # blood (100-cell target) | marrow (200)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | signed | amended
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    cells: Mapped[list["Cell"]] = relationship(back_populates="case", order_by="Cell.id")
    __mapper_args__ = {"version_id_col": row_version}


class Cell(Base):
    __tablename__ = "cells"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    image: Mapped[str] = mapped_column(String(200))  # content-addressed path under the data folder
    source: Mapped[str] = mapped_column(Text)  # the file it came from
    field_box: Mapped[list | None] = mapped_column(JSON, nullable=True)  # [x0, y0, x1, y1] when cut from a smear field
    model_class: Mapped[str] = mapped_column(String(40))
    probabilities: Mapped[dict] = mapped_column(JSON)
    distance: Mapped[float | None] = mapped_column(Float, nullable=True)
    px_per_um: Mapped[float | None] = mapped_column(Float, nullable=True)  # the scale the model framed it at (migration 0002)
    colour_distance: Mapped[float | None] = mapped_column(Float, nullable=True)  # of its view's colours to the sources' (0003)
    scale: Mapped[str | None] = mapped_column(String(20), nullable=True)  # how px_per_um was known: measured | run | ... (0004)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    review_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    current_class: Mapped[str] = mapped_column(String(40))
    set_by: Mapped[str] = mapped_column(String(80))  # "model" or a user
    opened_by: Mapped[str | None] = mapped_column(String(80), nullable=True)  # a flagged cell must be opened before signing
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    case: Mapped[Case] = relationship(back_populates="cells")
    __mapper_args__ = {"version_id_col": row_version}


class Audit(Base):
    """One change: append-only (the database refuses UPDATE and DELETE on this table)."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    cell_id: Mapped[int | None] = mapped_column(ForeignKey("cells.id"), nullable=True)
    user: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    action: Mapped[str] = mapped_column(String(30))  # import | judge | reclassify | undo | open | sign | second_sign | amend
    old: Mapped[str | None] = mapped_column(String(80), nullable=True)
    new: Mapped[str | None] = mapped_column(String(80), nullable=True)
    why: Mapped[str | None] = mapped_column(Text, nullable=True)


class AccountEvent(Base):
    """What happened to an account: a wrong password given for the name (at login or signing; the throttle counts
    them), a new password, closed, reopened, a new role; `by` whom (an OS user at the command line). Append-only."""

    __tablename__ = "account_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    event: Mapped[str] = mapped_column(String(40))  # wrong password | password changed | closed | reopened | role <role>
    by: Mapped[str | None] = mapped_column(String(120), nullable=True)


class Login(Base):
    """One login session (its id is the token's nonce): the server ends it on logout, and after a spell without a
    request (a station left logged in), so a copied cookie or token stops working with it."""

    __tablename__ = "logins"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended: Mapped[str | None] = mapped_column(String(40), nullable=True)  # logged out | idle


class Signature(Base):
    __tablename__ = "signatures"
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    meaning: Mapped[str] = mapped_column(String(200))  # what the signer attests ("reviewed and verified", ...)
    kind: Mapped[str] = mapped_column(String(20))  # primary | second


def database_url(data_dir: str | os.PathLike | None = None, url: str | None = None) -> str:
    """The database URL: `url` as given, else the SQLite file in `data_dir` (made when absent)."""
    if url:
        return url
    if not data_dir:
        raise WbcError("no review database: give --data-dir DIR (a SQLite file is made there) or --db URL (PostgreSQL)")
    d = Path(data_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WbcError(f"cannot make the review data folder {d}: {e.strerror}") from None
    return f"sqlite:///{(d / DB_FILE).resolve()}"


def make_engine(url: str) -> Engine:
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer; FKs are off by default in SQLite
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest migration (from empty, or from an older wbc); tests stop at an older `revision`."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def open_database(data_dir: str | os.PathLike | None = None, url: str | None = None) -> sessionmaker:
    """A session factory on the review database, migrated to the newest schema."""
    u = database_url(data_dir, url)
    engine = make_engine(u)
    try:
        upgrade(engine)
    except Exception as e:  # a wrong URL, a server down, a file that is not a database: one line
        raise WbcError(f"cannot open the review database {engine.url.render_as_string(hide_password=True)}: "
                       f"{str(e).splitlines()[0][:200]}") from None
    return sessionmaker(engine, expire_on_commit=False)
