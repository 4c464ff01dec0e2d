"""Who may do what: the one authorisation check.

Every route declares the permission it needs (``inhouse.api.access``); ``authorize``
decides from the caller's role alone. Tenant scope is the second half: a principal
outside the platform tenant sees only its own tenant, and anything of another tenant
answers exactly as if it did not exist (``scope_tenant``).
"""

from __future__ import annotations

from enum import StrEnum

from inhouse.errors import NotFoundError, PermissionDeniedError
from inhouse.tenancy.models import Principal, Role


class Permission(StrEnum):
    PUBLIC = "public"
    """No credential needed: liveness, readiness, the OpenAPI document."""
    INFERENCE = "inference"
    MODELS_READ = "models:read"
    KEYS_OWN = "keys:own"
    """Create, list and revoke keys: one's own (developer) or the tenant's (admins)."""
    TENANTS_READ = "tenants:read"
    TENANTS_MANAGE = "tenants:manage"
    QUOTAS_READ = "quotas:read"
    QUOTAS_MANAGE = "quotas:manage"
    USAGE_READ = "usage:read"
    AUDIT_READ = "audit:read"
    METRICS_READ = "metrics:read"
    SESSION_OWN = "session:own"
    """See who one is logged in as; log out."""
    FLOWS_READ = "flows:read"
    FLOWS_MANAGE = "flows:manage"
    """Apply (publish) and roll back the tenant's flows; hiding the visible AI label
    also takes an admin role."""
    NODES_READ = "nodes:read"
    NODES_MANAGE = "nodes:manage"
    """Register and remove fleet nodes (the platform's hardware)."""


_READ_ONLY = frozenset(
    {
        Permission.MODELS_READ,
        Permission.TENANTS_READ,
        Permission.QUOTAS_READ,
        Permission.USAGE_READ,
        Permission.AUDIT_READ,
        Permission.METRICS_READ,
        Permission.SESSION_OWN,
        Permission.FLOWS_READ,
        Permission.NODES_READ,
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.PLATFORM_ADMIN: frozenset(Permission) - {Permission.PUBLIC},
    Role.TENANT_ADMIN: _READ_ONLY
    | {Permission.INFERENCE, Permission.KEYS_OWN, Permission.FLOWS_MANAGE},
    Role.DEVELOPER: frozenset(
        {
            Permission.INFERENCE,
            Permission.MODELS_READ,
            Permission.KEYS_OWN,
            Permission.TENANTS_READ,
            Permission.QUOTAS_READ,
            Permission.SESSION_OWN,
            Permission.FLOWS_READ,
            Permission.FLOWS_MANAGE,
        }
    ),
    Role.AUDITOR: _READ_ONLY,
}

# What only the platform tenant's principals may do, whatever their role says.
_PLATFORM_ONLY = frozenset(
    {Permission.METRICS_READ, Permission.NODES_READ, Permission.NODES_MANAGE}
)


def allowed(principal: Principal, permission: Permission) -> bool:
    if permission is Permission.PUBLIC:
        return True
    if permission in _PLATFORM_ONLY and not principal.platform:
        return False
    return permission in ROLE_PERMISSIONS[principal.role]


def authorize(principal: Principal, permission: Permission) -> None:
    """Raise 403 unless the principal's role grants the permission."""
    if not allowed(principal, permission):
        raise PermissionDeniedError(
            f"the {principal.role.value} role does not allow {permission.value}",
            code="insufficient_permissions",
        )


# Changes that need a person's login (password + TOTP) when admin_requires_mfa is on.
MFA_GUARDED = frozenset(
    {
        Permission.TENANTS_MANAGE,
        Permission.QUOTAS_MANAGE,
        Permission.KEYS_OWN,
        Permission.FLOWS_MANAGE,
        Permission.NODES_MANAGE,
    }
)


def authorize_without_mfa(principal: Principal, permission: Permission) -> None:
    """Raise 403 when an API key (no second factor) attempts an MFA-guarded change."""
    if permission in MFA_GUARDED and not principal.logged_in_with_mfa:
        raise PermissionDeniedError(
            f"{permission.value} needs a login with password and one-time code "
            "(POST /auth/login), not an API key",
            code="mfa_required",
        )


def sees_all_tenants(principal: Principal) -> bool:
    return principal.platform


def scope_tenant(principal: Principal, tenant_name: str, *, changes: bool = False) -> None:
    """Raise 404, worded as for a tenant that does not exist, for another tenant's name.

    The platform tenant's principals read every tenant; only a platform-admin changes
    another tenant's things (``changes``).
    """
    across = principal.role is Role.PLATFORM_ADMIN if changes else sees_all_tenants(principal)
    if not across and tenant_name != principal.tenant_name:
        raise NotFoundError(f"tenant {tenant_name!r} does not exist", param="tenant")


def manages_all_keys(principal: Principal) -> bool:
    """Admins manage every key of their tenant; a developer only the keys it made."""
    return principal.role in (Role.PLATFORM_ADMIN, Role.TENANT_ADMIN)


# Which roles a caller may give a new key: never one above its own.
_GRANTABLE: dict[Role, frozenset[Role]] = {
    Role.PLATFORM_ADMIN: frozenset(Role),
    Role.TENANT_ADMIN: frozenset({Role.TENANT_ADMIN, Role.DEVELOPER, Role.AUDITOR}),
    Role.DEVELOPER: frozenset({Role.DEVELOPER}),
    Role.AUDITOR: frozenset(),
}


def authorize_key_role(principal: Principal, role: Role) -> None:
    """Raise 403 unless the principal may create a key with ``role``."""
    if role not in _GRANTABLE[principal.role]:
        raise PermissionDeniedError(
            f"the {principal.role.value} role may not create {role.value} keys",
            param="role",
            code="insufficient_permissions",
        )
