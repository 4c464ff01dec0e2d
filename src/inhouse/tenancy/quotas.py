"""Quotas of a tenant or of one of its keys: what may be used, stored per tenant.

Token and request limits are enforced on the request path (``admission``); cpu,
memory and storage limits by the fair-share allocator; model_count when a tenant
registers a model. ``None`` means no limit.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inhouse.errors import InvalidRequestError, NotFoundError
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.store.db import Database
from inhouse.store.tables import ApiKeyRow, QuotaRow, TenantRow, utcnow
from inhouse.tenancy.models import Principal

TOKEN_LIMITS = ("tokens_per_minute", "tokens_per_day", "tokens_per_month")
"""The quotas counted in tokens; each window is reserved and settled on every request."""


class PriorityClass(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


@dataclass(frozen=True, slots=True)
class Quota:
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrency: int | None = None
    priority: PriorityClass | None = None
    cpu_limit: float | None = None
    """Cores."""
    memory_limit: int | None = None
    """Bytes."""
    model_count: int | None = None
    storage_limit: int | None = None
    """Bytes."""

    def token_limits(self) -> list[int]:
        """The token limits that are set, of any window."""
        values: list[int | None] = [getattr(self, name) for name in TOKEN_LIMITS]
        return [value for value in values if value is not None]

    @property
    def limits_tokens(self) -> bool:
        return bool(self.token_limits())

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


QUOTA_FIELDS = tuple(f.name for f in fields(Quota))
NO_QUOTA = Quota()


@dataclass(frozen=True, slots=True)
class Limits:
    """What applies to one caller: its tenant's quota, its key's, and the quotas of the
    keys its key was made with (budgets it shares with them), all enforced."""

    tenant: Quota
    key: Quota
    makers: tuple[tuple[str, Quota], ...] = ()
    """(key id, quota) of each maker key that has a quota, nearest first."""

    @property
    def priority(self) -> PriorityClass:
        return self.key.priority or self.tenant.priority or PriorityClass.NORMAL

    @property
    def quotas(self) -> tuple[Quota, ...]:
        return (self.tenant, self.key, *(quota for _, quota in self.makers))

    @property
    def limits_tokens(self) -> bool:
        return any(quota.limits_tokens for quota in self.quotas)

    @property
    def smallest_token_limit(self) -> int | None:
        return min((limit for q in self.quotas for limit in q.token_limits()), default=None)


_INT32, _INT64 = 2**31 - 1, 2**63 - 1

# Kubernetes-style quantities: 500m cores, 32Gi or 32G bytes.
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i|[kKMGTP]|m)?\s*$")


def parse_cpu(value: str) -> float:
    match = _QUANTITY.match(value)
    if match is None or match.group(2) not in (None, "m"):
        raise InvalidRequestError(f"invalid cpu {value!r}: use cores (4, 0.5) or millicores (500m)")
    number = float(match.group(1))
    return number / 1000 if match.group(2) == "m" else number


def parse_bytes(value: str, field: str) -> int:
    match = _QUANTITY.match(value)
    if match is None or match.group(2) == "m":
        raise InvalidRequestError(
            f"invalid {field} {value!r}: use bytes or a quantity such as 512Mi, 32Gi, 1T",
            param=field,
        )
    unit = match.group(2)
    scale = _BINARY.get(unit or "", _DECIMAL.get(unit or "", 1))
    size = float(match.group(1)) * scale
    if size > _INT64:
        raise InvalidRequestError(f"{field} {value!r} is too large", param=field)
    return int(size)


def parse_changes(raw: dict[str, Any]) -> dict[str, Any]:
    """Quota changes as people write them (``"32Gi"``, ``"500m"``, ``"high"``) → typed values."""
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None or name not in ("cpu_limit", "memory_limit", "storage_limit", "priority"):
            changes[name] = value
        elif name == "priority":
            try:
                changes[name] = PriorityClass(value)
            except ValueError:
                raise InvalidRequestError(
                    f"invalid priority {value!r}: use high, normal or low", param="priority"
                ) from None
        elif name == "cpu_limit":
            changes[name] = parse_cpu(value) if isinstance(value, str) else float(value)
        else:
            changes[name] = parse_bytes(value, name) if isinstance(value, str) else int(value)
    return changes


def _quota(row: QuotaRow | None) -> Quota:
    if row is None:
        return NO_QUOTA
    values = {name: getattr(row, name) for name in QUOTA_FIELDS}
    if values["priority"] is not None:
        values["priority"] = PriorityClass(values["priority"])
    return Quota(**values)


# The largest value each limit's column holds (32-bit and 64-bit integers), and cores.
MAXIMA: dict[str, float] = {
    "tokens_per_day": _INT64,
    "tokens_per_month": _INT64,
    "requests_per_minute": _INT32,
    "tokens_per_minute": _INT64,
    "concurrency": _INT32,
    "cpu_limit": 1_000_000.0,
    "memory_limit": _INT64,
    "model_count": _INT32,
    "storage_limit": _INT64,
}


def validate_quota(quota: Quota) -> None:
    for name, maximum in MAXIMA.items():
        value = getattr(quota, name)
        if value is None:
            continue
        if not 0 <= value <= maximum:
            raise InvalidRequestError(
                f"{name} must be between 0 and {maximum:.0f}, not {value}", param=name
            )


class QuotaService:
    """Reads and changes quotas in the store; each change audited in its transaction."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    def _ids(self, tenant_name: str, key_id: str | None) -> tuple[str, str]:
        with self._db.session() as session:
            tenant_id = session.scalar(select(TenantRow.id).where(TenantRow.name == tenant_name))
            if tenant_id is None:
                raise NotFoundError(f"tenant {tenant_name!r} does not exist", param="tenant")
            if key_id:
                owner = session.scalar(select(ApiKeyRow.tenant_id).where(ApiKeyRow.id == key_id))
                if owner != tenant_id:
                    raise NotFoundError(f"no key {key_id!r} in tenant {tenant_name!r}", param="key")
        return tenant_id, key_id or ""

    def get(self, tenant_name: str, key_id: str | None = None) -> Quota:
        tenant_id, key = self._ids(tenant_name, key_id)
        with self._db.session() as session:
            return _quota(session.get(QuotaRow, (tenant_id, key)))

    def update(
        self,
        tenant_name: str,
        changes: dict[str, Any],
        key_id: str | None = None,
        *,
        actor: str,
    ) -> Quota:
        """Change the named fields (a value of None removes that limit); others stay."""
        unknown = set(changes) - set(QUOTA_FIELDS)
        if unknown:
            raise InvalidRequestError(f"unknown quota field {sorted(unknown)[0]!r}")
        tenant_id, key = self._ids(tenant_name, key_id)

        def update(session: Session) -> tuple[Quota, AuditEvent]:
            row = session.get(QuotaRow, (tenant_id, key))
            quota = replace(_quota(row), **changes)
            validate_quota(quota)
            if row is None:
                row = QuotaRow(tenant_id=tenant_id, key_id=key)
                session.add(row)
            for name, value in quota.as_dict().items():
                setattr(row, name, value.value if isinstance(value, StrEnum) else value)
            row.updated_at = utcnow()
            details = {"changes": changes}
            target = key or tenant_name
            return quota, AuditEvent(actor, "quota.update", tenant_id, target, details=details)

        try:
            return self._audit.audited(update)
        except IntegrityError:  # another writer created the row first: change that one
            return self._audit.audited(update)

    def limits(self, tenant_id: str, key_id: str, makers: tuple[str, ...] = ()) -> Limits:
        with self._db.session() as session:
            rows = session.scalars(
                select(QuotaRow).where(
                    QuotaRow.tenant_id == tenant_id,
                    QuotaRow.key_id.in_(("", key_id, *makers)),
                )
            ).all()
            by_key = {row.key_id: row for row in rows}
            return Limits(
                tenant=_quota(by_key.get("")),
                key=_quota(by_key.get(key_id)),
                makers=tuple((m, _quota(by_key[m])) for m in makers if m in by_key),
            )


class LimitsCache:
    """Quotas on the request path: read from the store at most every ``ttl`` seconds."""

    def __init__(
        self,
        quotas: QuotaService,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quotas = quotas
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[Limits, float]] = {}

    async def limits_for(self, principal: Principal) -> Limits:
        cached = self._cache.get(principal.key_id)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        limits = await asyncio.to_thread(
            self._quotas.limits, principal.tenant_id, principal.key_id, principal.makers
        )
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[principal.key_id] = (limits, now + self._ttl)
        return limits
