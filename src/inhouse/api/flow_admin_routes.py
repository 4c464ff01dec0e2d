"""The admin API of flows: validate, test, apply (publish), list, show and roll back.

A flow belongs to a tenant; a tenant named in the path is checked against the caller's
scope first, as everywhere under /admin. Lexicon files named by specs sent here must lie
in the tenant's folder of the lexicon directory (``INHOUSE_FLOWS__LEXICON_DIR/TENANT``),
so no tenant learns anything of another's lexicons. Turning the visible
AI-generated label off takes a tenant-admin (or a platform-admin).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from inhouse.api.access import Require
from inhouse.api.admin_schemas import Text
from inhouse.api.deps import ServicesDep
from inhouse.api.flow_routes import FlowRunRequest, FlowRunResult, chat_request, flow_run_result
from inhouse.flows.runner import CompiledFlow
from inhouse.flows.spec import flow_json_schema
from inhouse.flows.store import FlowInfo, FlowVersion
from inhouse.gateway.context import Endpoint
from inhouse.gateway.services import Services
from inhouse.tenancy.models import Principal, Role
from inhouse.tenancy.permissions import Permission, scope_tenant

router = APIRouter(prefix="/admin", tags=["flows"])

FlowsReader = Annotated[Principal, Depends(Require(Permission.FLOWS_READ))]
FlowsManager = Annotated[Principal, Depends(Require(Permission.FLOWS_MANAGE))]
Caller = Annotated[Principal, Depends(Require(Permission.INFERENCE))]

MAX_TEST_INPUTS = 20


class FlowSpecBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(description="a flow spec, as `inhouse flows schema` describes")


class FlowTestBody(FlowSpecBody):
    inputs: list[FlowRunRequest] = Field(min_length=1, max_length=MAX_TEST_INPUTS)


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(default=None, ge=1, le=2**31 - 1, description="default: previous")


class FlowOut(BaseModel):
    name: str
    published: int
    latest: int
    updated_at: datetime

    @classmethod
    def of(cls, info: FlowInfo) -> FlowOut:
        return cls(
            name=info.name, published=info.published, latest=info.latest,
            updated_at=info.updated_at,
        )  # fmt: skip


class FlowVersionOut(BaseModel):
    name: str
    version: int
    published: bool
    created_at: datetime
    created_by: str
    spec: dict[str, Any]

    @classmethod
    def of(cls, found: FlowVersion) -> FlowVersionOut:
        return cls(
            name=found.name,
            version=found.version,
            published=found.published,
            created_at=found.created_at,
            created_by=found.created_by,
            spec=found.spec.model_dump(mode="json"),
        )


class FlowValidated(BaseModel):
    valid: bool
    spec: dict[str, Any]
    variables: list[str] = Field(description="the template's {names} callers must send")


class FlowTestReport(BaseModel):
    flow: str
    results: list[FlowRunResult]


def _lexicons(services: Services, tenant: str) -> Path:
    """Where a tenant's flows read their lexicon files from."""
    return services.settings.resolved_lexicon_dir / tenant


def _may_hide_label(principal: Principal) -> bool:
    return principal.role in (Role.TENANT_ADMIN, Role.PLATFORM_ADMIN)


@router.get("/flows/schema")
def flow_schema(services: ServicesDep, _: FlowsReader) -> dict[str, Any]:
    """The JSON schema of flow specs, with every step type and its options."""
    return flow_json_schema(services.control.flows.registry)


@router.post("/flows/validate", response_model=FlowValidated)
def validate_flow(
    body: FlowSpecBody, services: ServicesDep, principal: FlowsReader
) -> FlowValidated:
    """Check a spec as ``apply`` would for the caller's tenant, without storing it."""
    spec = services.control.flows.validate(
        body.spec, lexicon_root=_lexicons(services, principal.tenant_name)
    )
    return FlowValidated(
        valid=True, spec=spec.model_dump(mode="json"), variables=spec.model.variables
    )


@router.post("/flows/test", response_model=FlowTestReport)
async def test_flow(body: FlowTestBody, services: ServicesDep, principal: Caller) -> FlowTestReport:
    """Run a spec that is not published on sample inputs, in the caller's tenant: the
    model calls are real (and metered); the results carry each step's trace."""
    flows = services.control.flows
    spec = flows.validate(body.spec, lexicon_root=_lexicons(services, principal.tenant_name))
    flow = CompiledFlow(spec, flows.registry)
    results = []
    for sample in body.inputs:
        request = chat_request(f"flow:{spec.name}", sample)
        reply = await services.pipeline.handle(principal, request, Endpoint.CHAT, trial=flow)
        results.append(flow_run_result(reply))
    return FlowTestReport(flow=spec.name, results=results)


@router.get("/tenants/{tenant}/flows", response_model=list[FlowOut])
def list_flows(tenant: Text, services: ServicesDep, principal: FlowsReader) -> list[FlowOut]:
    scope_tenant(principal, tenant)
    return [FlowOut.of(info) for info in services.control.flows.list(tenant)]


@router.post("/tenants/{tenant}/flows", response_model=FlowVersionOut, status_code=201)
def apply_flow(
    tenant: Text, body: FlowSpecBody, services: ServicesDep, principal: FlowsManager
) -> FlowVersionOut:
    """Validate, store as the flow's next version and publish it."""
    scope_tenant(principal, tenant, changes=True)
    applied = services.control.flows.apply(
        tenant,
        body.spec,
        actor=principal.key_id,
        may_hide_label=_may_hide_label(principal),
        lexicon_root=_lexicons(services, tenant),
    )
    return FlowVersionOut.of(applied)


@router.get("/tenants/{tenant}/flows/{name}", response_model=FlowVersionOut)
def show_flow(
    tenant: Text,
    name: Text,
    services: ServicesDep,
    principal: FlowsReader,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> FlowVersionOut:
    """The published version, or ``version``."""
    scope_tenant(principal, tenant)
    return FlowVersionOut.of(services.control.flows.show(tenant, name, version))


@router.get("/tenants/{tenant}/flows/{name}/versions", response_model=list[FlowVersionOut])
def flow_versions(
    tenant: Text, name: Text, services: ServicesDep, principal: FlowsReader
) -> list[FlowVersionOut]:
    scope_tenant(principal, tenant)
    return [FlowVersionOut.of(v) for v in services.control.flows.versions(tenant, name)]


@router.post("/tenants/{tenant}/flows/{name}/rollback", response_model=FlowVersionOut)
def rollback_flow(
    tenant: Text, name: Text, body: RollbackBody, services: ServicesDep, principal: FlowsManager
) -> FlowVersionOut:
    """Publish an earlier version (the previous one by default)."""
    scope_tenant(principal, tenant, changes=True)
    published = services.control.flows.rollback(
        tenant,
        name,
        to=body.to,
        actor=principal.key_id,
        may_hide_label=_may_hide_label(principal),
    )
    return FlowVersionOut.of(published)
