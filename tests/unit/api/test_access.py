"""Every route declares a permission; the one check decides from the role."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter

from inhouse.api.access import all_routes, check_every_route_declares_a_permission
from inhouse.api.app import create_app
from inhouse.config import Settings
from inhouse.errors import ConfigurationError, NotFoundError, PermissionDeniedError
from inhouse.tenancy.models import Principal, Role
from inhouse.tenancy.permissions import Permission, authorize, authorize_key_role, scope_tenant


def principal(role: Role, *, platform: bool = False) -> Principal:
    return Principal("ten_a", "a", "key_a", role, platform=platform)


def test_every_route_of_the_gateway_declares_a_permission(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    routes = list(all_routes(app.routes))
    assert len(routes) >= 15
    assert all(route.permission is not None for route in routes)
    public = {route.path for route in routes if route.permission is Permission.PUBLIC}
    assert public == {"/healthz", "/readyz", "/openapi.json", "/auth/login"}


def test_a_route_without_a_declared_permission_stops_the_app(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    forgotten = APIRouter()

    @forgotten.get("/admin/forgotten")
    def handler() -> dict[str, str]:
        return {}

    app.include_router(forgotten)
    with pytest.raises(ConfigurationError, match="/admin/forgotten"):
        check_every_route_declares_a_permission(app)


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        (Role.DEVELOPER, Permission.USAGE_READ),
        (Role.DEVELOPER, Permission.QUOTAS_MANAGE),
        (Role.AUDITOR, Permission.INFERENCE),
        (Role.AUDITOR, Permission.KEYS_OWN),
        (Role.TENANT_ADMIN, Permission.QUOTAS_MANAGE),
        (Role.TENANT_ADMIN, Permission.TENANTS_MANAGE),
        (Role.TENANT_ADMIN, Permission.METRICS_READ),
    ],
)
def test_roles_are_refused_what_they_do_not_hold(role: Role, permission: Permission) -> None:
    with pytest.raises(PermissionDeniedError, match=permission.value):
        authorize(principal(role), permission)


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        (Role.DEVELOPER, Permission.INFERENCE),
        (Role.DEVELOPER, Permission.KEYS_OWN),
        (Role.AUDITOR, Permission.USAGE_READ),
        (Role.AUDITOR, Permission.AUDIT_READ),
        (Role.TENANT_ADMIN, Permission.KEYS_OWN),
        (Role.TENANT_ADMIN, Permission.USAGE_READ),
    ],
)
def test_roles_hold_what_they_are_for(role: Role, permission: Permission) -> None:
    authorize(principal(role), permission)


def test_metrics_are_for_the_platform_tenant_only() -> None:
    authorize(principal(Role.AUDITOR, platform=True), Permission.METRICS_READ)
    with pytest.raises(PermissionDeniedError):
        authorize(principal(Role.AUDITOR), Permission.METRICS_READ)


def test_another_tenant_answers_as_one_that_does_not_exist() -> None:
    with pytest.raises(NotFoundError) as foreign:
        scope_tenant(principal(Role.TENANT_ADMIN), "b")
    assert foreign.value.message == "tenant 'b' does not exist"
    scope_tenant(principal(Role.TENANT_ADMIN), "a")
    scope_tenant(principal(Role.PLATFORM_ADMIN, platform=True), "b")


@pytest.mark.parametrize(
    ("role", "allowed_roles"),
    [
        (Role.PLATFORM_ADMIN, set(Role)),
        (Role.TENANT_ADMIN, {Role.TENANT_ADMIN, Role.DEVELOPER, Role.AUDITOR}),
        (Role.DEVELOPER, {Role.DEVELOPER}),
        (Role.AUDITOR, set()),
    ],
)
def test_no_role_creates_a_key_above_its_own(role: Role, allowed_roles: set[Role]) -> None:
    caller = principal(role, platform=True)
    for new_role in Role:
        if new_role in allowed_roles:
            authorize_key_role(caller, new_role)
        else:
            with pytest.raises(PermissionDeniedError):
                authorize_key_role(caller, new_role)


def test_only_a_platform_admin_changes_another_tenants_things() -> None:
    for role in (Role.TENANT_ADMIN, Role.DEVELOPER, Role.AUDITOR):
        platform_caller = principal(role, platform=True)
        scope_tenant(platform_caller, "b")  # reading across tenants
        with pytest.raises(NotFoundError):
            scope_tenant(platform_caller, "b", changes=True)
    scope_tenant(principal(Role.PLATFORM_ADMIN, platform=True), "b", changes=True)
