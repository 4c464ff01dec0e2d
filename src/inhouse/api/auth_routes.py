"""People's logins under /auth: password + TOTP for a short-lived session token.

The token (``ihs_…``) is a bearer credential like an API key, accepted on every route
the person's role allows, until it expires or is revoked (logout, a disabled user, a
reset of their MFA). Logins, failed or not, are in the audit chain.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from inhouse.api.access import Public, Require
from inhouse.api.admin_schemas import Text, Timestamp
from inhouse.api.deps import ServicesDep
from inhouse.tenancy.models import Principal, Role
from inhouse.tenancy.permissions import Permission

router = APIRouter(prefix="/auth", tags=["auth"])

SessionOwner = Annotated[Principal, Depends(Require(Permission.SESSION_OWN))]
NO_STORE = {"Cache-Control": "no-store"}


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[Text, Field(min_length=1, max_length=64)]
    password: Annotated[Text, Field(min_length=1, max_length=1024)]
    code: Annotated[Text, Field(min_length=1, max_length=16)]
    """The current code of the user's authenticator app (TOTP)."""


class Identity(BaseModel):
    id: str
    """The user's id for a session, the key's id for an API key."""
    kind: Literal["session", "api_key"]
    tenant: str
    role: Role
    expires_at: Timestamp | None = None


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: Timestamp
    identity: Identity


def _identity(principal: Principal) -> Identity:
    return Identity(
        id=principal.key_id,
        kind="session" if principal.logged_in_with_mfa else "api_key",
        tenant=principal.tenant_name,
        role=principal.role,
        expires_at=principal.expires_at,
    )


@router.post("/login", response_model=LoginResponse, dependencies=[Depends(Public())])
async def login(
    body: LoginRequest, services: ServicesDep, request: Request, response: Response
) -> LoginResponse:
    """Log in with username, password and the current one-time code."""
    services.login_throttle.check(request.client.host if request.client else "unknown")
    users = services.control.users
    session = await services.password_pool.run(users.login, body.username, body.password, body.code)
    response.headers.update(NO_STORE)
    return LoginResponse(
        token=session.token,
        expires_at=session.expires_at,
        identity=Identity(
            id=session.user.id,
            kind="session",
            tenant=session.user.tenant_name,
            role=session.user.role,
            expires_at=session.expires_at,
        ),
    )


@router.post("/logout", status_code=204, response_class=Response)
async def logout(services: ServicesDep, principal: SessionOwner) -> Response:
    """End the login session this request carries (an API key is revoked elsewhere)."""
    await asyncio.to_thread(services.control.users.logout, principal)
    services.authenticator.forget_session(principal)  # on the loop, like every cache write
    return Response(status_code=204)


@router.get("/session", response_model=Identity)
def whoami(principal: SessionOwner) -> Identity:
    """Who this credential is: tenant, role and, for a session, when it ends."""
    return _identity(principal)
