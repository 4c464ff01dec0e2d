"""Request and response bodies of the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from inhouse.store.tables import as_utc
from inhouse.tenancy.models import ApiKeyInfo, Role, Tenant
from inhouse.tenancy.quotas import PriorityClass, Quota

NonNegative = Annotated[int, Field(ge=0)]


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refused on every database alike, as a bad request.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Text = Annotated[str, AfterValidator(_storable)]
"""A string the API stores or looks up: names, and ids in paths and queries."""


Timestamp = Annotated[datetime, AfterValidator(as_utc)]
"""A moment, always with its zone (RFC 3339, as the document says)."""


class TenantOut(BaseModel):
    id: str
    name: str
    is_platform: bool
    created_at: Timestamp

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(
            id=tenant.id,
            name=tenant.name,
            is_platform=tenant.is_platform,
            created_at=tenant.created_at,
        )


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text


class KeyOut(BaseModel):
    id: str
    tenant: str
    role: Role
    name: str
    prefix: str
    created_at: Timestamp
    revoked_at: Timestamp | None
    created_by: str | None
    flows_only: bool = False

    @classmethod
    def of(cls, key: ApiKeyInfo) -> KeyOut:
        return cls(
            id=key.id,
            tenant=key.tenant_name,
            role=key.role,
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
            created_by=key.created_by,
            flows_only=key.flows_only,
        )


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role = Role.DEVELOPER
    name: Annotated[Text, Field(max_length=128)] = ""
    flows_only: bool = Field(
        default=False, description="the key may call flows only, never a bare model"
    )


class KeyCreated(KeyOut):
    key: str
    """The secret: shown in this answer only."""


class QuotaPatch(BaseModel):
    """Fields to change; a field set to null removes that limit, absent fields stay."""

    model_config = ConfigDict(extra="forbid")
    tokens_per_day: NonNegative | None = None
    tokens_per_month: NonNegative | None = None
    requests_per_minute: NonNegative | None = None
    tokens_per_minute: NonNegative | None = None
    concurrency: NonNegative | None = None
    priority: PriorityClass | None = None
    cpu_limit: float | str | None = Field(default=None, description="cores: 4, 0.5 or 500m")
    memory_limit: int | str | None = Field(default=None, description="bytes, or 32Gi, 512Mi")
    model_count: NonNegative | None = None
    storage_limit: int | str | None = Field(default=None, description="bytes, or 100Gi, 1Ti")


class QuotaOut(BaseModel):
    tenant: str
    key_id: str | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrency: int | None
    priority: PriorityClass | None
    cpu_limit: float | None
    memory_limit: int | None
    model_count: int | None
    storage_limit: int | None

    @classmethod
    def of(cls, tenant: str, key_id: str | None, quota: Quota) -> QuotaOut:
        return cls(tenant=tenant, key_id=key_id, **quota.as_dict())


class UsageRowOut(BaseModel):
    day: str | None = None
    tenant: str | None = None
    model: str | None = None
    key_id: str | None = None
    requests: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageReport(BaseModel):
    object: str = "list"
    data: list[UsageRowOut]


class AuditEntryOut(BaseModel):
    seq: int
    created_at: str
    actor: str
    tenant_id: str | None
    action: str
    target: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditList(BaseModel):
    object: str = "list"
    data: list[AuditEntryOut]
