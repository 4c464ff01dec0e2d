"""Everything a running gateway holds, built once from the settings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from inhouse.config import QuotaFailureMode, Settings
from inhouse.fleet.client import FleetClient
from inhouse.fleet.health import FleetMonitor
from inhouse.flows.catalogue import default_registry
from inhouse.flows.published import PublishedFlows
from inhouse.flows.violations import ViolationCounter
from inhouse.gateway.admission import Admission
from inhouse.gateway.control import Control, open_control
from inhouse.gateway.engines import EnginePool
from inhouse.gateway.flow_stage import FlowStage
from inhouse.gateway.periodic import Periodic
from inhouse.gateway.pipeline import Pipeline
from inhouse.gateway.recording import Recording
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.protocol.body import BodyBounds
from inhouse.registry.models import BUILTIN_MODEL_NAME
from inhouse.security.login_throttle import LoginThrottle, PasswordPool
from inhouse.tenancy.admission import Limiter, LocalLimiter
from inhouse.tenancy.auth import Authenticator
from inhouse.tenancy.metering import UsageRecorder
from inhouse.tenancy.quotas import LimitsCache
from inhouse.tenancy.redis_limiter import RedisLimiter
from inhouse.tenancy.usage_journal import UsageJournal
from inhouse.tenancy.window_usage import used_in_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    control: Control
    authenticator: Authenticator
    engines: EnginePool
    recorder: UsageRecorder
    metrics: GatewayMetrics
    admission: Admission
    pipeline: Pipeline
    login_throttle: LoginThrottle
    password_pool: PasswordPool
    housekeeping: tuple[Periodic, ...]
    fleet: FleetMonitor
    body_bounds: BodyBounds

    @property
    def settings(self) -> Settings:
        return self.control.settings

    async def start(self) -> None:
        self.recorder.start()
        limiter = self.admission.limiter
        if limiter.forgets_on_restart:
            # Usage a killed process left in the journal is written first, so it counts.
            await self.recorder.flush()
            used = await asyncio.to_thread(used_in_windows, self.control.db, datetime.now(UTC))
            limiter.seed(used)
        await self.engines.start()
        await self.fleet.start()
        for job in self.housekeeping:
            job.start()

    async def close(self) -> None:
        for job in self.housekeeping:
            await job.close()
        await self.fleet.close()
        await self.engines.close()
        await self.admission.limiter.close()
        self.password_pool.close()
        await self.recorder.close()
        self.control.db.dispose()

    def builtin_ready(self) -> bool:
        if not self.settings.builtin_model:
            return True
        engines = [e for e in self.engines.local_engines() if e.name == BUILTIN_MODEL_NAME]
        return all(engine.ready for engine in engines)


def body_bounds(settings: Settings) -> BodyBounds:
    server = settings.server
    return BodyBounds(server.max_messages, server.max_json_values, server.max_prompt_characters)


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
    recorder = UsageRecorder(
        control.db,
        settings.metering,
        journal,
        audit=control.audit if settings.audit.inference_events else None,
    )
    metrics = GatewayMetrics()
    metrics.watch_engines(engines.engine_gauges)
    limits = LimitsCache(control.quotas, ttl_seconds=settings.gateway.quota_cache_seconds)
    admission = Admission(limits, build_limiter(settings), settings)
    fleet = FleetMonitor(control.nodes, settings.fleet, gateway=settings.gateway)
    engines.fleet = FleetClient(fleet, engines.session, settings, metrics)
    flows = FlowStage(
        PublishedFlows(
            control.flows,
            default_registry(),
            ttl_seconds=settings.gateway.registry_refresh_seconds,
        ),
        violations=ViolationCounter(control.db, control.audit, settings.flows),
        audit=control.audit,
        metrics=metrics,
    )
    return Services(
        control=control,
        authenticator=Authenticator(
            control.tenants, control.users, ttl_seconds=settings.gateway.auth_cache_seconds
        ),
        engines=engines,
        recorder=recorder,
        metrics=metrics,
        admission=admission,
        pipeline=Pipeline(
            engines,
            Recording(recorder, metrics, admission),
            admission,
            settings.tenancy,
            flows=flows,
        ),
        fleet=fleet,
        body_bounds=body_bounds(settings),
        login_throttle=LoginThrottle(settings.auth.login_attempts_per_minute),
        password_pool=PasswordPool(settings.auth.login_workers, settings.auth.login_queue),
        housekeeping=(
            Periodic(
                "key rotation",
                control.key_rotation.rotate_if_due,
                settings.crypto.rotation_check_seconds,
            ),
            Periodic(
                "audit retention",
                lambda _should_stop: control.prune_audit(),  # one statement: nothing to stop
                settings.audit.prune_check_seconds,
            ),
            Periodic(
                "audit checkpoint",
                control.audit_anchor.checkpoint,
                settings.audit.checkpoint_seconds,
            ),
        ),
    )
