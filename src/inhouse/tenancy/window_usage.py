"""What each tenant and key has used in the current quota windows, read back from the
usage table: how in-process admission counters start again after a restart, so that a
restart never hands a tenant a fresh daily or monthly budget."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import case, func, select

from inhouse.store.db import Database
from inhouse.store.tables import ApiKeyRow, UsageRow

Used = dict[str, dict[str, int]]
"""Subject id (``t:<tenant>``, ``k:<key>``) → counter name → amount."""


def used_in_windows(db: Database, now: datetime) -> Used:
    """Tokens per minute, day and month (UTC) and requests this minute, per tenant, per
    key and per key that made those keys (a maker's budget covers its keys' use)."""
    minute = now.replace(second=0, microsecond=0)
    day = minute.replace(hour=0, minute=0)
    month = day.replace(day=1)
    tokens = UsageRow.prompt_tokens + UsageRow.completion_tokens
    query = (
        select(
            UsageRow.tenant_id,
            UsageRow.key_id,
            func.sum(tokens),
            func.sum(case((UsageRow.created_at >= day, tokens), else_=0)),
            func.sum(case((UsageRow.created_at >= minute, tokens), else_=0)),
            func.sum(case((UsageRow.created_at >= minute, 1), else_=0)),
        )
        .where(UsageRow.created_at >= month)
        .group_by(UsageRow.tenant_id, UsageRow.key_id)
    )
    used: Used = defaultdict(lambda: defaultdict(int))
    with db.session() as session:
        rows = session.execute(query).all()
        makers = dict(session.execute(select(ApiKeyRow.id, ApiKeyRow.created_by)).tuples().all())
    for tenant_id, key_id, per_month, per_day, per_minute, requests in rows:
        counts = {
            "tokens_per_month": int(per_month or 0),
            "tokens_per_day": int(per_day or 0),
            "tokens_per_minute": int(per_minute or 0),
            "requests_per_minute": int(requests or 0),
        }
        for subject in (f"t:{tenant_id}", *(f"k:{key}" for key in _lineage(key_id, makers))):
            for name, amount in counts.items():
                used[subject][name] += amount
    return {subject: dict(counts) for subject, counts in used.items()}


def _lineage(key_id: str, makers: dict[str, str | None]) -> list[str]:
    """The key and the keys it was made with."""
    chain = [key_id]
    maker = makers.get(key_id)
    while maker is not None and maker in makers and maker not in chain:
        chain.append(maker)
        maker = makers[maker]
    return chain
