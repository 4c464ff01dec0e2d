"""Every route declares the permission it needs; this module checks it and lists them.

FastAPI routes depend on ``Require(permission)``, which authenticates the caller,
runs the one authorisation check and returns the principal. Plain Starlette routes
(the hot inference path) wrap their endpoint with ``protected(permission)``.
``undeclared_routes`` finds any route that declares nothing: the app refuses to
start with one, and a test walks them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from inhouse.api.deps import authenticate, services_of
from inhouse.errors import ConfigurationError
from inhouse.tenancy.models import Principal
from inhouse.tenancy.permissions import Permission, authorize, authorize_without_mfa

_PERMISSION_ATTRIBUTE = "inhouse_permission"


async def caller_allowed(request: Request, permission: Permission) -> Principal:
    """The one access check of every protected route: authenticate, authorise, and,
    where admin changes need a login, refuse API keys for them."""
    principal = await authenticate(request)
    authorize(principal, permission)
    if services_of(request).settings.admin_requires_mfa:
        authorize_without_mfa(principal, permission)
    return principal


class Require:
    """A FastAPI dependency: the caller, authenticated and allowed ``permission``."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Principal:
        return await caller_allowed(request, self.permission)


class Public:
    """A FastAPI dependency that declares a route open to anyone."""

    permission = Permission.PUBLIC

    async def __call__(self) -> None:
        return None


PrincipalEndpoint = Callable[[Request, Principal], Awaitable[Response]]


def protected(permission: Permission) -> Callable[[PrincipalEndpoint], Callable[..., Any]]:
    """Wrap a Starlette endpoint: authenticate, authorise, then call it with the principal."""

    def wrap(endpoint: PrincipalEndpoint) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            return await endpoint(request, await caller_allowed(request, permission))

        guarded.__name__ = endpoint.__name__
        guarded.__doc__ = endpoint.__doc__
        setattr(guarded, _PERMISSION_ATTRIBUTE, permission)
        return guarded

    return wrap


def declare_public(app: FastAPI, path: str) -> None:
    """Declare a route FastAPI adds by itself (the OpenAPI document) public."""
    for route in app.routes:
        if isinstance(route, Route) and route.path == path:
            setattr(route.endpoint, _PERMISSION_ATTRIBUTE, Permission.PUBLIC)


def _in_dependant(dependant: Dependant) -> Permission | None:
    for dependency in dependant.dependencies:
        call = dependency.call
        if isinstance(call, Require | Public):
            return call.permission
        found = _in_dependant(dependency)
        if found is not None:
            return found
    return None


def declared_permission(route: BaseRoute) -> Permission | None:
    if isinstance(route, APIRoute):
        return _in_dependant(route.dependant)
    if isinstance(route, Route):
        permission = getattr(route.endpoint, _PERMISSION_ATTRIBUTE, None)
        return permission if isinstance(permission, Permission) else None
    return None


@dataclass(frozen=True, slots=True)
class RouteInfo:
    path: str
    methods: tuple[str, ...]
    permission: Permission | None


def all_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[RouteInfo]:
    """Every route of an app with its full path, through included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's lazily included router
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from all_routes(included.routes, prefix + getattr(context, "prefix", ""))
            continue
        methods = tuple(sorted(getattr(route, "methods", None) or ()))
        path = prefix + getattr(route, "path", "")
        yield RouteInfo(path, methods, declared_permission(route))


def undeclared_routes(app: FastAPI) -> list[str]:
    return [info.path for info in all_routes(app.routes) if info.permission is None]


def check_every_route_declares_a_permission(app: FastAPI) -> None:
    missing = undeclared_routes(app)
    if missing:
        raise ConfigurationError(
            f"routes without a declared permission: {', '.join(missing)}; "
            "add Depends(Require(...)) or Depends(Public())"
        )
