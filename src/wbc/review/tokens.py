"""Login sessions without server memory: a token is `user id . expiry . nonce . HMAC-SHA256` under a secret kept
in the data folder (made once, mode 0600), so every server process sharing that folder accepts it, and a
restart logs nobody out. The CSRF token of a cookie session is an HMAC of its session token (double submit)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

SECRET_FILE = "session.key"
HOURS = 12


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


def issue(key: bytes, user_id: int, hours: float = HOURS) -> str:
    body = f"{user_id}.{int(time.time() + hours * 3600)}.{secrets.token_hex(8)}"
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, token: str | None) -> int | None:
    """The user id of a valid, unexpired token, else None."""
    if not token or token.count(".") != 3:
        return None
    body, mac = token.rsplit(".", 1)
    if not hmac.compare_digest(mac, _mac(key, body)):
        return None
    uid, expiry, _ = body.split(".")
    if not (uid.isdigit() and expiry.isdigit()) or int(expiry) < time.time():
        return None
    return int(uid)


def csrf(key: bytes, token: str) -> str:
    return _mac(key, "csrf:" + token)
