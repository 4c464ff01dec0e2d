"""Where the master key comes from: a private file, the environment, or a plug-in.

The master key never encrypts records; it wraps the data keys that do (envelope
encryption), so that changing it re-wraps a handful of keys, not every record.
An external KMS or HSM plugs in as an entry point in the ``inhouse.key_providers``
group: a callable taking the settings and returning a :class:`MasterKeyProvider`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import secrets
import stat
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from inhouse.config import Environment, Settings
from inhouse.errors import ConfigurationError
from inhouse.security.secret_file import write_private_file

MASTER_KEY_BYTES = 32
ENTRY_POINT_GROUP = "inhouse.key_providers"


@dataclass(frozen=True, slots=True)
class MasterKey:
    material: bytes
    source: str
    """Where it came from, for messages: ``file data/master.key``, ``INHOUSE_MASTER_KEY``."""
    created_now: bool = False
    """True when this start created it: nothing encrypted before can open with it."""


class MasterKeyProvider(Protocol):
    def load(self) -> MasterKey: ...


def decode_master_key(text: str, source: str) -> bytes:
    try:
        material = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{source} is not base64") from None
    if len(material) != MASTER_KEY_BYTES:
        raise ConfigurationError(
            f"{source} must hold {MASTER_KEY_BYTES} random bytes in base64 "
            f"(it holds {len(material)}); make one with: inhouse crypto new-master-key"
        )
    return material


def new_master_key_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode()


class FileKeyProvider:
    """A file readable by its owner only, created on the first start."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> MasterKey:
        created = False
        if not self._path.exists():
            with contextlib.suppress(FileExistsError):  # another process created it first
                write_private_file(self._path, new_master_key_text() + "\n")
                created = True
        mode = stat.S_IMODE(self._path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"{self._path} is readable by others (mode {mode:o}): chmod 600 it"
            )
        source = f"file {self._path}"
        return MasterKey(decode_master_key(self._path.read_text(), source), source, created)


class EnvironmentKeyProvider:
    """``INHOUSE_MASTER_KEY``: for containers whose secret store fills the environment."""

    def __init__(self, settings: Settings) -> None:
        self._value = settings.master_key

    def load(self) -> MasterKey:
        if self._value is None:
            raise ConfigurationError(
                "crypto.key_provider is 'env' but INHOUSE_MASTER_KEY is not set"
            )
        return MasterKey(
            decode_master_key(self._value.get_secret_value(), "INHOUSE_MASTER_KEY"),
            "INHOUSE_MASTER_KEY",
        )


def key_provider(settings: Settings) -> MasterKeyProvider:
    name = settings.crypto.key_provider
    if name == "file":
        _refuse_key_beside_database(settings)
        return FileKeyProvider(settings.master_key_file)
    if name == "env":
        return EnvironmentKeyProvider(settings)
    plugins = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not plugins:
        raise ConfigurationError(
            f"unknown crypto.key_provider {name!r}: use 'file', 'env' or the name of an "
            f"entry point in the {ENTRY_POINT_GROUP!r} group"
        )
    factory = next(iter(plugins)).load()
    provider: MasterKeyProvider = factory(settings)
    return provider


def load_master_key(settings: Settings) -> MasterKey:
    return key_provider(settings).load()


def load_next_master_key(settings: Settings) -> MasterKey | None:
    """The master key a change (``inhouse crypto new-master-key``) is moving to, while the
    change is under way: data keys it has re-wrapped open with it."""
    path = settings.next_master_key_file
    if not path.exists():
        return None
    return FileKeyProvider(path).load()


def write_next_master_key(settings: Settings) -> MasterKey:
    """Start a change of master key: a new one, written (0600, synced) where the keyring
    looks for it, or the one a change that stopped midway left there."""
    path = settings.next_master_key_file
    if not path.exists():
        write_private_file(path, new_master_key_text() + "\n")
    return FileKeyProvider(path).load()


def _refuse_key_beside_database(settings: Settings) -> None:
    """In production the master key must not travel with the database: a copy of the
    SQLite database's directory would otherwise hold both the records and their key."""
    if settings.environment is not Environment.PRODUCTION:
        return
    directory = settings.sqlite_directory
    key_file = settings.master_key_file.resolve()
    if directory is not None and key_file.is_relative_to(directory):
        raise ConfigurationError(
            f"the master key file {key_file} lies in the database's directory {directory}: "
            "in production keep it elsewhere (INHOUSE_CRYPTO__MASTER_KEY_FILE) or use the "
            "env provider or a key management plug-in"
        )
