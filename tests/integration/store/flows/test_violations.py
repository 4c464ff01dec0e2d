"""Suspending end users whose inputs flows keep blocking, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from inhouse.config import FlowSettings
from inhouse.errors import PermissionDeniedError
from inhouse.flows.violations import ViolationCounter
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.service import TenantService
from tests.keyrings import audit_for, keyring_for

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(database_url: str) -> tuple[ViolationCounter, AuditLog, Clock, str]:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    tenant = TenantService(db, ApiKeyHasher(b"k"), audit_for(db)).create_tenant(
        "bank", actor="test"
    )
    audit = AuditLog(db, b"s" * 32, keyring_for(db))
    clock = Clock()
    counter = ViolationCounter(db, audit, FlowSettings(suspension_minutes=30), clock=clock)
    return counter, audit, clock, tenant.id


def test_three_blocked_inputs_in_a_row_suspend_for_the_period(
    world: tuple[ViolationCounter, AuditLog, Clock, str],
) -> None:
    counter, audit, clock, tenant = world
    for _ in range(2):
        counter.record(tenant, "u-1", blocked=True)
    counter.check(tenant, "u-1")  # two: not yet
    counter.record(tenant, "u-1", blocked=True)
    with pytest.raises(PermissionDeniedError) as raised:
        counter.check(tenant, "u-1")
    assert raised.value.code == "user_suspended"
    counter.check(tenant, "u-2")  # others are not affected
    clock.now += timedelta(minutes=30, seconds=1)
    counter.check(tenant, "u-1")
    suspensions = [e.as_dict() for e in audit.entries() if e.action == "flow.user_suspend"]
    assert [(e["target"], e["details"]["in_a_row"]) for e in suspensions] == [("user:u-1", 3)]


def test_an_accepted_input_resets_the_run_but_five_a_day_still_suspend(
    world: tuple[ViolationCounter, AuditLog, Clock, str],
) -> None:
    counter, _, clock, tenant = world
    for _ in range(4):
        counter.record(tenant, "u-1", blocked=True)
        counter.record(tenant, "u-1", blocked=False)
    counter.check(tenant, "u-1")  # four blocked, never two in a row
    clock.now += timedelta(days=1)  # a new day starts the daily count again
    for _ in range(4):
        counter.record(tenant, "u-1", blocked=True)
        counter.record(tenant, "u-1", blocked=False)
    counter.check(tenant, "u-1")
    counter.record(tenant, "u-1", blocked=True)  # the fifth of the day
    with pytest.raises(PermissionDeniedError):
        counter.check(tenant, "u-1")


def test_concurrent_blocks_are_all_counted(
    world: tuple[ViolationCounter, AuditLog, Clock, str],
) -> None:
    counter, audit, _, tenant = world
    barrier = threading.Barrier(6)

    def block(_: int) -> None:
        barrier.wait()
        counter.record(tenant, "u-race", blocked=True)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(block, range(6)))
    with pytest.raises(PermissionDeniedError):  # 3 in a row reached, however they raced
        counter.check(tenant, "u-race")
    assert any(e.action == "flow.user_suspend" for e in audit.entries())
