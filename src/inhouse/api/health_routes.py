"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from inhouse.api.access import Public, Require
from inhouse.api.deps import ServicesDep
from inhouse.tenancy.permissions import Permission

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: bool
    builtin_model: bool
    quota_store: bool
    """Redis reachable (always, without Redis); unreachable fails readiness if failing closed."""


@router.get("/healthz", response_model=Health, dependencies=[Depends(Public())])
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    dependencies=[Depends(Public())],
)
async def readyz(services: ServicesDep) -> Response:
    database = await asyncio.to_thread(services.control.db.ping)
    model = services.builtin_ready()
    limiter = services.admission.limiter
    quota_store = await limiter.reachable()
    ready = database and model and (quota_store or not limiter.fails_closed)
    body = Readiness(
        status="ready" if ready else "not ready",
        database=database,
        builtin_model=model,
        quota_store=quota_store,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(Require(Permission.METRICS_READ))],
)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
