"""Users, roles and passwords (argon2id via argon2-cffi: a maintained, memory-hard hash; never stored in clear)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from wbc.errors import WbcError
from wbc.review.db import User

ROLES = ("technologist", "reviewer", "admin")
MIN_PASSWORD = 8
_hasher = PasswordHasher()


def add_user(session, name: str, role: str, password: str) -> User:
    """A new active user; a clear error for a taken name, an unknown role or a short password."""
    if role not in ROLES:
        raise WbcError(f"--role must be one of {', '.join(ROLES)}, not '{role}'")
    if not name or len(name) > 80 or not name.replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise WbcError(f"user name '{name}': use letters, digits, '.', '-' or '_' (at most 80)")
    if len(password) < MIN_PASSWORD:
        raise WbcError(f"the password of {name} is too short: at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.name == name)):
        raise WbcError(f"user {name} exists already")
    user = User(name=name, role=role, password_hash=_hasher.hash(password), active=True)
    session.add(user)
    session.flush()
    return user


def authenticate(session, name: str, password: str) -> User | None:
    """The active user with this name and password, else None (same answer for a wrong name or password)."""
    user = session.scalar(select(User).where(User.name == name, User.active.is_(True)))
    if user is None:
        _hasher.hash(password)  # spend the same time, so a name cannot be probed by timing
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user
