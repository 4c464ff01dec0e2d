"""The server secret: from settings, or (development only) a file created once."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from inhouse.config import MIN_SECRET_LENGTH, Environment, Settings
from inhouse.errors import ConfigurationError


def write_private_file(path: Path, content: str, *, replace: bool = False) -> None:
    """Create ``path``, readable and writable by the owner only, whole or not at all.

    The content goes to a private temporary file first and is linked into place, so a
    reader never sees a half-written file; an existing file raises FileExistsError, or,
    with ``replace``, is replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
            return
        os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def resolve_secret_key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.environment is not Environment.DEVELOPMENT:
        raise ConfigurationError("INHOUSE_SECRET_KEY is required outside development")
    path = settings.secret_key_file
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process created it first
            write_private_file(path, secrets.token_urlsafe(48))
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(f"{path} holds no usable secret; remove it to create a new one")
    return secret.encode()
