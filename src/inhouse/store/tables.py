"""Tables. Every change to them goes through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A moment read back from the store, with its zone: SQLite drops it (all are UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_platform: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    flows_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """May call flows only (``flow:NAME``): never a model around its flow's steps."""


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    upstream_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    api_key_env: Mapped[str | None] = mapped_column(String(128), nullable=True)
    api_key_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The upstream's API key, sealed with a data key (``inhouse.security.keyring``)."""
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageRow(Base):
    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    tenant_id: Mapped[str] = mapped_column(String(32), index=True)
    key_id: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(64))
    stream: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column()
    model_version: Mapped[str] = mapped_column(String(64), default="")
    node: Mapped[str] = mapped_column(String(128), default="")


class QuotaRow(Base):
    """Limits of a tenant (key_id "") or of one of its keys. NULL: no limit."""

    __tablename__ = "quotas"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True, default="")
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    priority: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cpu_limit: Mapped[float | None] = mapped_column(nullable=True)
    memory_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    model_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    storage_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRow(Base):
    """One link of the audit hash chain. inhouse changes a row only to re-seal its details
    under a newer key (the hash covers the plain text) and deletes only the oldest ones,
    past retention, after chaining an ``audit.prune`` entry that accounts for them."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class DataKeyRow(Base):
    """A data key, wrapped by the master key; the highest version seals new records."""

    __tablename__ = "data_keys"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    algorithm: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserRow(Base):
    """A person who logs in (console, admin API) with a password and a TOTP code."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(256))
    totp_secret_sealed: Mapped[str] = mapped_column(Text)
    totp_last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    """The newest TOTP time step accepted: a code is never accepted twice."""
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SessionRow(Base):
    """A login: a short-lived bearer token, stored as a keyed hash."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FlowVersionRow(Base):
    """One version of a tenant's flow: its spec as validated JSON. Never changed."""

    __tablename__ = "flow_versions"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    spec: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))


class FlowReleaseRow(Base):
    """Which version of a flow answers ``flow:NAME`` now."""

    __tablename__ = "flow_releases"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FlowViolationRow(Base):
    """Inputs of one end user (or key) that flows blocked: in a row, and today (UTC)."""

    __tablename__ = "flow_violations"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(256), primary_key=True)
    in_a_row: Mapped[int] = mapped_column(Integer, default=0)
    day: Mapped[date] = mapped_column(Date)
    on_day: Mapped[int] = mapped_column(Integer, default=0)
    suspended_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NodeRow(Base):
    """A fleet node: an ``inhouse node``, vLLM, or another OpenAI-compatible server."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(String(512), unique=True)
    """The OpenAI base URL, ending in ``/v1``, never with credentials."""
    tier: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    models: Mapped[str] = mapped_column(Text)
    """JSON object: the model name callers use → the name the node knows it by."""
    capacity: Mapped[int] = mapped_column(Integer)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cost_per_1k_tokens: Mapped[float] = mapped_column(Float, default=0.0)
    labels: Mapped[str] = mapped_column(Text, default="{}")
    """JSON object of free-form labels."""
    token_env: Mapped[str] = mapped_column(String(128))
    """The gateway's environment variable holding the node's bearer token (never the token)."""
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    approved: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """False for a self-registered node until an operator approves it: polled, not routed."""
    token_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The node's own token, issued at approval, sealed; it replaces ``token_env``'s."""
    token_delivered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Whether the node has been given its token (once, in a registration's answer)."""
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    registered_by: Mapped[str] = mapped_column(String(128))
    """Who registered it: ``cli:<user>``, a key id, or ``node:<name>`` for self-registration."""
