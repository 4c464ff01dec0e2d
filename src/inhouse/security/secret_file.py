"""The server secret: from settings, or (development only) a file created once."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from inhouse.config import Environment, Settings
from inhouse.errors import ConfigurationError


def write_private_file(path: Path, content: str) -> None:
    """Create ``path`` readable and writable by the owner only; never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def resolve_secret_key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.environment is not Environment.DEVELOPMENT:
        raise ConfigurationError("INHOUSE_SECRET_KEY is required outside development")
    path = settings.secret_key_file
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process created it first
            write_private_file(path, secrets.token_urlsafe(48))
    return path.read_text().strip().encode()
