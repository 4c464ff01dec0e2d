"""Passwords: Argon2id hashes (argon2-cffi's defaults, RFC 9106's second choice)."""

from __future__ import annotations

import os
import threading
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from inhouse.errors import InvalidRequestError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()
# Each verification takes 64 MiB and a core for tens of milliseconds: at most this many
# at once, whatever the number of login requests in flight.
_verifying = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


@cache
def _decoy_hash() -> str:
    """Verified when the username is unknown, so that a wrong name costs what a wrong
    password costs and response times do not tell which names exist."""
    return _hasher.hash("inhouse decoy password, never anyone's")


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequestError(
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters",
            param="password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequestError("the password is too long", param="password")
    if len(set(password)) < 5:
        raise InvalidRequestError("the password repeats too few characters", param="password")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; ``None`` (no such user) costs the same and is False."""
    try:
        with _verifying:
            _hasher.verify(stored_hash or _decoy_hash(), password[:MAX_PASSWORD_LENGTH])
    except (VerificationError, InvalidHashError):
        return False
    return stored_hash is not None
