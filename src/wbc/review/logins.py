"""Login sessions the server can end: a token is checked against its row in `logins`, which a logout or a spell
without a request ends for good, on every server process of the station. A station left logged in at the bench
logs itself out, and a copied cookie or token dies with the session it came from."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.exc import OperationalError

from wbc.review import tokens
from wbc.review.db import Login, User, aware, now

log = logging.getLogger(__name__)

TOUCH = timedelta(minutes=1)  # last_seen is written at most this often: one small write a minute a user, not one a request


def start(session, key: bytes, user: User) -> str:
    """A new login's token, its row added to the caller's transaction."""
    token = tokens.issue(key, user.id, tokens.stamp(user.password_hash))
    session.add(Login(id=tokens.login_id(token), user_id=user.id))
    return token


def refusal(session, token: str, user_id: int, idle_minutes: float) -> str | None:
    """Why this (HMAC-checked) token no longer logs in, or None while its session is open; a session used now is
    kept open (and one idle too long is ended) in `session`'s transaction, committed here."""
    row = session.get(Login, tokens.login_id(token))
    if row is None or row.user_id != user_id:
        return "no such login session"
    if row.ended_at is not None:
        return f"this session has ended ({row.ended})"
    t = now()
    if t - aware(row.last_seen) > timedelta(minutes=idle_minutes):
        row.ended_at, row.ended = t, "idle"
        _commit(session)
        return f"logged out after {idle_minutes:g} minutes without activity"
    if t - aware(row.last_seen) > TOUCH:
        row.last_seen = t
        _commit(session)
    return None


def end(session, token: str, why: str = "logged out") -> None:
    row = session.get(Login, tokens.login_id(token))
    if row is not None and row.ended_at is None:
        row.ended_at, row.ended = now(), why


def _commit(session) -> None:
    """Best effort: a writer holding SQLite's lock past its busy timeout delays the mark, never the request."""
    try:
        session.commit()
    except OperationalError as e:
        session.rollback()
        log.warning("could not record a login's activity (database busy): %s", str(e).splitlines()[0][:120])
