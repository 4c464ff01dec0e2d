"""A keyring over a test store, with a fixed master key (tests only)."""

from __future__ import annotations

from inhouse.config import CipherAlgorithm
from inhouse.security.audit import AuditLog
from inhouse.security.key_provider import MasterKey
from inhouse.security.keyring import Keyring
from inhouse.store.db import Database

TEST_MASTER_KEY = MasterKey(b"t" * 32, "test master key")


def keyring_for(db: Database) -> Keyring:
    return Keyring(db, TEST_MASTER_KEY, CipherAlgorithm.SM4_GCM)


def audit_for(db: Database) -> AuditLog:
    """The audit log of a test store: the changes its services make are chained here."""
    return AuditLog(db, b"test-server-secret-of-32-bytes!!", keyring_for(db))
