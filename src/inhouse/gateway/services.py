"""Everything a running gateway holds, built once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inhouse.config import QuotaFailureMode, Settings
from inhouse.gateway.admission import Admission
from inhouse.gateway.engines import EnginePool
from inhouse.gateway.periodic import Periodic
from inhouse.gateway.service import Gateway
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.registry.models import BUILTIN_MODEL_NAME, ModelRegistry
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.key_provider import load_master_key
from inhouse.security.key_rotation import KeyRotation
from inhouse.security.keyring import Keyring
from inhouse.security.secret_file import resolve_secret_key
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.admission import Limiter, LocalLimiter
from inhouse.tenancy.auth import Authenticator
from inhouse.tenancy.metering import UsageRecorder
from inhouse.tenancy.quotas import LimitsCache, QuotaService
from inhouse.tenancy.redis_limiter import RedisLimiter
from inhouse.tenancy.service import TenantService
from inhouse.tenancy.usage_journal import UsageJournal
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
    admin_key_written: Path | None = None

    def record(
        self,
        actor: str,
        action: str,
        *,
        tenant_id: str | None = None,
        target: str = "",
        **details: Any,
    ) -> None:
        """Append an admin action to the audit chain (metadata only, never secrets)."""
        self.audit.record(AuditEvent(actor, action, tenant_id, target, details=details))

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
    tenants = TenantService(db, hasher)
    keyring = Keyring(db, load_master_key(settings), settings.crypto.algorithm)
    audit = AuditLog(db, secret, keyring)
    registry = ModelRegistry(db, keyring)
    written = tenants.bootstrap_platform(settings.admin_key_file)
    if written is not None:
        audit.record(AuditEvent("system", "platform.bootstrap", target=str(written.name)))
        if settings.builtin_model:
            registry.add_builtin()
        log.info("first start: the platform admin key was written to %s", written.resolve())
    return Control(
        settings=settings,
        db=db,
        tenants=tenants,
        registry=registry,
        quotas=QuotaService(db),
        audit=audit,
        keyring=keyring,
        users=UserService(db, hasher, keyring, audit, settings.auth),
        admin_key_written=written,
    )


@dataclass(frozen=True, slots=True)
class Services:
    control: Control
    authenticator: Authenticator
    engines: EnginePool
    recorder: UsageRecorder
    metrics: GatewayMetrics
    admission: Admission
    gateway: Gateway
    housekeeping: tuple[Periodic, ...]

    @property
    def settings(self) -> Settings:
        return self.control.settings

    async def start(self) -> None:
        self.recorder.start()
        await self.engines.start()
        for job in self.housekeeping:
            job.start()

    async def close(self) -> None:
        for job in self.housekeeping:
            await job.close()
        await self.engines.close()
        await self.admission.limiter.close()
        await self.recorder.close()
        self.control.db.dispose()

    def builtin_ready(self) -> bool:
        if not self.settings.builtin_model:
            return True
        engines = [e for e in self.engines.local_engines() if e.name == BUILTIN_MODEL_NAME]
        return all(engine.ready for engine in engines)


def build_limiter(settings: Settings) -> Limiter:
    if settings.redis_url is None:
        return LocalLimiter()
    return RedisLimiter(
        settings.redis_url,
        fail_open=settings.gateway.quota_failure_mode is QuotaFailureMode.OPEN,
        lease_seconds=settings.gateway.upstream_read_timeout_seconds + 60.0,
    )


def build_services(settings: Settings) -> Services:
    control = open_control(settings)
    engines = EnginePool(control.registry, settings)
    journal = UsageJournal(settings.usage_journal_dir, fsync=settings.metering.fsync)
    recorder = UsageRecorder(control.db, settings.metering, journal)
    metrics = GatewayMetrics()
    limits = LimitsCache(control.quotas, ttl_seconds=settings.gateway.quota_cache_seconds)
    admission = Admission(limits, build_limiter(settings), settings)
    return Services(
        control=control,
        authenticator=Authenticator(
            control.tenants, control.users, ttl_seconds=settings.gateway.auth_cache_seconds
        ),
        engines=engines,
        recorder=recorder,
        metrics=metrics,
        admission=admission,
        gateway=Gateway(engines, recorder, metrics, admission),
        housekeeping=(
            Periodic(
                "key rotation",
                control.key_rotation.rotate_if_due,
                settings.crypto.rotation_check_seconds,
            ),
        ),
    )
