"""What the usage table says was used in the current quota windows: the seed of the
in-process counters after a restart, per tenant, key and maker key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from inhouse.security.api_keys import ApiKeyHasher
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import UsageRow
from inhouse.tenancy.models import Role
from inhouse.tenancy.service import TenantService
from inhouse.tenancy.window_usage import used_in_windows
from tests.keyrings import audit_for

NOW = datetime(2026, 12, 7, 10, 30, 20, tzinfo=UTC)


def test_usage_per_window_rolls_up_to_tenants_and_maker_keys(database_url: str) -> None:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    tenants = TenantService(db, ApiKeyHasher(b"k" * 32), audit_for(db))
    tenant = tenants.create_tenant("bank", actor="test")
    parent, _ = tenants.create_key("bank", Role.DEVELOPER, actor="test")
    child, _ = tenants.create_key("bank", Role.DEVELOPER, created_by=parent.id, actor="test")
    moments = {
        "this minute": NOW - timedelta(seconds=5),
        "today": NOW - timedelta(hours=2),
        "this month": NOW - timedelta(days=3),
        "last month": NOW - timedelta(days=40),
    }
    with db.session() as session:
        for n, (label, moment) in enumerate(moments.items()):
            session.add(
                UsageRow(
                    request_id=f"r{n}",
                    created_at=moment,
                    tenant_id=tenant.id,
                    key_id=child.id,
                    model="m",
                    endpoint="chat.completions",
                    stream=False,
                    status_code=200,
                    prompt_tokens=10,
                    completion_tokens=10**n,
                    latency_ms=1.0,
                    model_version=label,
                )
            )
    used = used_in_windows(db, NOW)
    expected = {
        "tokens_per_minute": 11,
        "tokens_per_day": 11 + 20,
        "tokens_per_month": 11 + 20 + 110,
        "requests_per_minute": 1,
    }
    assert used == {
        f"t:{tenant.id}": expected,
        f"k:{child.id}": expected,
        f"k:{parent.id}": expected,
    }
    db.dispose()
