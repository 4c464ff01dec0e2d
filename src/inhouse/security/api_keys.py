"""API keys: random, shown once, stored as a keyed hash (HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "ih_"
_SECRET_BYTES = 32
_DISPLAY_PREFIX_LENGTH = 8


_KEY_SHAPE = re.compile(r"^ih_[A-Za-z0-9_-]{43}$")


def looks_like_api_key(token: str) -> bool:
    """Cheap shape check, so junk never reaches the database or the cache."""
    return bool(_KEY_SHAPE.match(token))


@dataclass(frozen=True, slots=True)
class NewApiKey:
    plaintext: str
    key_hash: str
    display_prefix: str


class ApiKeyHasher:
    """Hashes keys with a server secret, so a stolen database alone cannot check guesses."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def hash(self, plaintext: str) -> str:
        return hmac.new(self._secret, plaintext.encode(), hashlib.sha256).hexdigest()

    def generate(self) -> NewApiKey:
        plaintext = KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
        return NewApiKey(
            plaintext=plaintext,
            key_hash=self.hash(plaintext),
            display_prefix=plaintext[: len(KEY_PREFIX) + _DISPLAY_PREFIX_LENGTH],
        )


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
