"""Users, roles and passwords (argon2id via argon2-cffi: a maintained, memory-hard hash; never stored in clear)."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from wbc.errors import WbcError
from wbc.review.db import AccountEvent, Login, User, aware, now

log = logging.getLogger(__name__)

ROLES = ("technologist", "reviewer", "admin")
MIN_PASSWORD = 8
# A name given this many wrong passwords within the window is refused until the oldest of them leaves it: a password
# cannot be guessed at speed, and a user who mistypes a few times is never stopped.
MAX_FAILURES, WINDOW = 10, timedelta(minutes=15)
WRONG, CHANGED = "wrong password", "password changed"
_hasher = PasswordHasher()


class Locked(WbcError):
    """Too many wrong passwords for a name lately (HTTP 429); `seconds` until it may try again."""

    def __init__(self, message: str, seconds: int):
        super().__init__(message)
        self.seconds = seconds


def add_user(session, name: str, role: str, password: str) -> User:
    """A new active user; a clear error for a taken name, an unknown role or a short password."""
    check_role(role)
    if not name or len(name) > 80 or not name.replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise WbcError(f"user name '{name}': use letters, digits, '.', '-' or '_' (at most 80)")
    _check_password(name, password)
    if session.scalar(select(User).where(User.name == name)):
        raise WbcError(f"user {name} exists already")
    user = User(name=name, role=role, password_hash=_hasher.hash(password), active=True)
    session.add(user)
    session.flush()
    return user


def named(session, name: str) -> User:
    """The account of this name, else a one-line error that says how to list them."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise WbcError(f"no user {name} on this station (`wbc review users list` shows them)")
    return user


def check_role(role: str) -> None:
    if role not in ROLES:
        raise WbcError(f"--role must be one of {', '.join(ROLES)}, not '{role}'")


def _check_password(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise WbcError(f"the password of {name} is too short: at least {MIN_PASSWORD} characters")


def set_password(session, name: str, password: str, by: str) -> User:
    """A new password (a forgotten one, or one that may be known): the old one stops working at once."""
    user = named(session, name)
    _check_password(name, password)
    user.password_hash = _hasher.hash(password)
    _end_logins(session, user, CHANGED)
    return _changed(session, user, CHANGED, by)


def set_active(session, name: str, active: bool, by: str) -> User:
    """Close an account (someone left) or open it again. Never deleted: signatures and the audit trail name it."""
    user = named(session, name)
    user.active = active
    if not active:
        _end_logins(session, user, "account closed")
    return _changed(session, user, "reopened" if active else "closed", by)


def set_role(session, name: str, role: str, by: str) -> User:
    check_role(role)
    user = named(session, name)
    user.role = role
    return _changed(session, user, f"role {role}", by)


def _end_logins(session, user: User, why: str) -> None:
    """The user's open sessions recorded as ended (their tokens are refused already: the password stamp, the closed account)."""
    session.execute(update(Login).where(Login.user_id == user.id, Login.ended_at.is_(None)).values(ended_at=now(), ended=why))


def _changed(session, user: User, event: str, by: str) -> User:
    session.add(AccountEvent(name=user.name, event=event, by=by[:120]))
    log.info("account %s: %s (by %s)", user.name, event, by)
    return user


def list_users(session) -> list[dict]:
    """Every account with its role, whether it is open, its last login, and its wrong passwords within the
    throttle's window (MAX_FAILURES lock the name)."""
    wrong = dict(session.execute(select(AccountEvent.name, func.count())
                                 .where(AccountEvent.event == WRONG, AccountEvent.at > now() - WINDOW, _since_password_set(AccountEvent.name))
                                 .group_by(AccountEvent.name)).all())
    last = dict(session.execute(select(Login.user_id, func.max(Login.started_at)).group_by(Login.user_id)).all())
    return [{"name": u.name, "role": u.role, "active": u.active, "created_at": aware(u.created_at).isoformat(),
             "last_login": aware(last[u.id]).isoformat() if u.id in last else None, "wrong_passwords_lately": wrong.get(u.name, 0)}
            for u in session.scalars(select(User).order_by(User.name))]


def authenticate(session, name: str, password: str) -> User | None:
    """The active user with this name and password, else None (same answer for a wrong name or password); Locked
    while the name has had MAX_FAILURES wrong passwords within WINDOW. Each wrong one is recorded at once in its own
    transaction, so it counts even when the caller's is rolled back (in the caller's where that already writes to
    SQLite, whose one write lock it holds)."""
    _refuse_if_locked(session, name)
    user = session.scalar(select(User).where(User.name == name, User.active.is_(True)))
    if user is None:
        _hasher.hash(password)  # spend the same time, so a name cannot be probed by timing
        _failed(session, name)
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        _failed(session, name)
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def _refuse_if_locked(session, name: str) -> None:
    last = _wrong_passwords(session, name)
    if len(last) == MAX_FAILURES and now() - aware(last[-1]) < WINDOW:
        seconds = math.ceil((aware(last[-1]) + WINDOW - now()).total_seconds())
        raise Locked(f"{MAX_FAILURES} wrong passwords for {name} within {WINDOW.seconds // 60} minutes: "
                     f"try again in {math.ceil(seconds / 60)} minute(s), or ask an admin for a new password", seconds)


def _wrong_passwords(session, name: str) -> list:
    """When the name's last MAX_FAILURES wrong passwords since its password was last set were given, newest first: an
    admin's new password lifts the lock (the user who forgot theirs, or a name someone guessed at, need not wait)."""
    return session.scalars(select(AccountEvent.at).where(AccountEvent.name == name[:80], AccountEvent.event == WRONG,
                                                         _since_password_set(name[:80]))
                           .order_by(AccountEvent.id.desc()).limit(MAX_FAILURES)).all()


def _since_password_set(name):
    """Account events after the name's last new password (`name`: a name, or the outer query's name column): the one
    rule by which a new password lifts the lock, for the lock and for the users list alike."""
    reset = aliased(AccountEvent)
    last = select(func.max(reset.id)).where(reset.name == name, reset.event == CHANGED).correlate(AccountEvent).scalar_subquery()
    return AccountEvent.id > func.coalesce(last, 0)


def _failed(session, name: str) -> None:
    row = AccountEvent(name=name[:80], event=WRONG)
    if _writing_sqlite(session):  # a second writer would wait on this one: the caller's transaction keeps it
        session.add(row)
    else:
        with Session(bind=session.get_bind()) as own, own.begin():
            own.add(row)
    log.warning("wrong password for user name %r", name)


def _writing_sqlite(session) -> bool:
    """Has the caller written in an open SQLite transaction (which holds the one write lock)? pysqlite begins one
    only before its first write."""
    conn = session.connection()
    return conn.dialect.name == "sqlite" and conn.connection.dbapi_connection.in_transaction
