"""A key-provider plug-in as an enterprise would ship one (here: a key in a file of its own
format), loaded through the ``inhouse.key_providers`` entry-point group in a test."""

from __future__ import annotations

from pathlib import Path

from inhouse.config import Settings
from inhouse.security.key_provider import MasterKey


class HexFileProvider:
    def __init__(self, settings: Settings) -> None:
        self._path = Path(settings.data_dir) / "kms-key.hex"

    def load(self) -> MasterKey:
        return MasterKey(bytes.fromhex(self._path.read_text().strip()), f"kms {self._path}")


def provider(settings: Settings) -> HexFileProvider:
    return HexFileProvider(settings)
