"""Dependencies of the routes: the services object and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inhouse.gateway.services import Services
from inhouse.tenancy.models import Principal


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(request: Request) -> Principal:
    services: Services = request.app.state.services
    return await services.authenticator.authenticate(request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(get_principal)]
