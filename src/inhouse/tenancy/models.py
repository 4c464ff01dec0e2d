"""Tenancy's typed data: roles, tenants, keys, the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    PLATFORM_ADMIN = "platform-admin"
    TENANT_ADMIN = "tenant-admin"
    DEVELOPER = "developer"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    is_platform: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    tenant_id: str
    tenant_name: str
    role: Role
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    created_by: str | None = None
    flows_only: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from a credential on every request."""

    tenant_id: str
    tenant_name: str
    key_id: str
    role: Role
    platform: bool = False
    """The platform tenant's principals act across tenants (as far as their role allows)."""
    session_id: str | None = None
    """Set for a person's login session (password + TOTP); None for an API key."""
    expires_at: datetime | None = None
    """When a login session ends."""
    makers: tuple[str, ...] = ()
    """The keys this key was made with, nearest first: their quotas are budgets it shares."""
    flows_only: bool = False
    """The key may call flows only (``model: "flow:NAME"``), never a bare model."""

    @property
    def logged_in_with_mfa(self) -> bool:
        return self.session_id is not None
