"""How routes reach the services object and the authenticated principal.

The ``Annotated`` dependencies serve ordinary routes. The inference routes call
``services_of`` and ``authenticate`` directly: FastAPI's dependency solver costs
tens of microseconds per dependency per request, a large share of what the
gateway may add to a request (see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inhouse.gateway.services import Services
from inhouse.protocol.bearer import bearer_token
from inhouse.tenancy.models import Principal


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def authenticate(request: Request) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    return await services_of(request).authenticator.authenticate(token)


async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]
