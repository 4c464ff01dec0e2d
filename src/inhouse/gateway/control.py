"""The control plane: the store, keys, tenants, users, models, audit — no server.

The CLI and the admin API work on it; opening it imports no engine (torch), so that an
admin command starts in a fraction of a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from inhouse.config import Settings
from inhouse.fleet.registry import NodeRegistry, SelfRegistrationPolicy
from inhouse.flows.catalogue import default_registry
from inhouse.flows.store import FlowStore
from inhouse.registry.models import ModelRegistry
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.audit_anchor import AuditAnchor
from inhouse.security.key_provider import load_master_key, load_next_master_key
from inhouse.security.key_rotation import KeyRotation
from inhouse.security.keyring import Keyring
from inhouse.security.secret_file import resolve_secret_key
from inhouse.security.secret_variables import SecretVariables
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import utcnow
from inhouse.tenancy.quotas import QuotaService
from inhouse.tenancy.service import TenantService
from inhouse.tenancy.users import UserService

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Control:
    """The control plane: what the CLI and the admin API work on, no server needed."""

    settings: Settings
    db: Database
    tenants: TenantService
    registry: ModelRegistry
    quotas: QuotaService
    audit: AuditLog
    keyring: Keyring
    users: UserService
    flows: FlowStore
    nodes: NodeRegistry
    audit_anchor: AuditAnchor
    admin_key_written: Path | None = None

    def prune_audit(self) -> int:
        """Apply the audit retention period now; returns how many entries went."""
        days = self.settings.audit.retention_days
        return self.audit.prune(utcnow() - timedelta(days=days))

    @property
    def key_rotation(self) -> KeyRotation:
        return KeyRotation(self.db, self.keyring, self.audit, self.settings.crypto)


def open_control(settings: Settings) -> Control:
    """Open the store, apply migrations and, on the very first start, bootstrap it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    upgrade_to_head(db.engine)
    secret = resolve_secret_key(settings)
    hasher = ApiKeyHasher(secret)
    keyring = Keyring(
        db,
        load_master_key(settings),
        settings.crypto.algorithm,
        next_master=load_next_master_key(settings),
    )
    audit = AuditLog(db, secret, keyring)
    tenants = TenantService(db, hasher, audit)
    secrets = SecretVariables(settings.gateway.secret_variables)
    registry = ModelRegistry(db, keyring, audit, secrets)
    registry.bind_sealed_keys()
    written = tenants.bootstrap_platform(settings.admin_key_file)
    if written is not None:
        audit.record(AuditEvent("system", "platform.bootstrap", target=str(written.name)))
        if settings.builtin_model:
            registry.add_builtin(actor="system")
        log.info("first start: the platform admin key was written to %s", written.resolve())
    return Control(
        settings=settings,
        db=db,
        tenants=tenants,
        registry=registry,
        quotas=QuotaService(db, audit),
        audit=audit,
        keyring=keyring,
        users=UserService(db, hasher, keyring, audit, settings.auth, tenants),
        flows=FlowStore(db, default_registry(), audit),
        nodes=NodeRegistry(
            db,
            audit,
            secrets,
            keyring=keyring,
            policy=SelfRegistrationPolicy(
                url_prefixes=tuple(settings.fleet.self_registration_urls),
                models=frozenset(settings.fleet.self_registration_models),
                max_capacity=settings.fleet.max_registered_capacity,
            ),
        ),
        audit_anchor=AuditAnchor(
            audit,
            settings.audit_checkpoint_file,
            secret,
            syslog=settings.audit.checkpoint_syslog,
            webhook=settings.audit.checkpoint_webhook,
        ),
        admin_key_written=written,
    )
