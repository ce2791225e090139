"""Login tokens: `user id . expiry . login id . HMAC-SHA256` under a secret kept in the data folder (made once,
mode 0600), so every server process sharing that folder accepts it, and a restart logs nobody out. The HMAC also
covers a stamp of the user's password hash, so a new password ends every session of the old one (a password that
may be known is changed to lock its holder out). The login id names the server's record of the session
(wbc.review.logins), which a logout or a spell without activity ends. The CSRF token of a cookie session is an
HMAC of its session token (double submit)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

SECRET_FILE = "session.key"
HOURS = 12
MAX_ID = 2**31 - 1  # the users table's integer: a larger id in a forged token is refused before it reaches the database


def secret(data_dir: str | os.PathLike) -> bytes:
    path = Path(data_dir) / SECRET_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        except FileExistsError:
            pass  # another process made it first: read theirs
    return path.read_bytes()


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def stamp(password_hash: str) -> str:
    """What a token binds to: changes with every new password (argon2 salts each hash)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def issue(key: bytes, user_id: int, user_stamp: str, hours: float = HOURS) -> str:
    body = f"{user_id}.{int(time.time() + hours * 3600)}.{secrets.token_hex(16)}"
    return f"{body}.{_mac(key, f'{body}:{user_stamp}')}"


def claimed_user(token: str | None) -> int | None:
    """The user id a well-formed, unexpired token names (not yet trusted: `verify` it with that user's stamp)."""
    if not token or token.count(".") != 3:
        return None
    uid, expiry, _, _ = token.split(".")
    if not (uid.isdigit() and expiry.isdigit()) or int(expiry) < time.time() or int(uid) > MAX_ID:
        return None
    return int(uid)


def login_id(token: str) -> str:
    """The id of the server's record of this login (the token's random part)."""
    return token.split(".")[2]


def verify(key: bytes, token: str, user_stamp: str) -> bool:
    """Was this token issued here, for the password the user has now?"""
    body, mac = token.rsplit(".", 1)
    return hmac.compare_digest(mac, _mac(key, f"{body}:{user_stamp}"))


def csrf(key: bytes, token: str) -> str:
    return _mac(key, "csrf:" + token)
