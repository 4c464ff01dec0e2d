"""The admin API under /admin: tenants, keys, quotas, usage.

Every route declares its permission (``Require``); a tenant named in the path is
checked against the caller's scope first, so another tenant's name answers 404
exactly like a name that does not exist.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from inhouse.api.access import Require
from inhouse.api.admin_schemas import (
    AuditEntryOut,
    AuditList,
    KeyCreate,
    KeyCreated,
    KeyOut,
    QuotaOut,
    QuotaPatch,
    TenantCreate,
    TenantOut,
    Text,
    UsageReport,
    UsageRowOut,
)
from inhouse.api.deps import ServicesDep
from inhouse.gateway.services import Services
from inhouse.tenancy.models import Principal
from inhouse.tenancy.permissions import (
    Permission,
    authorize_key_role,
    manages_all_keys,
    scope_tenant,
    sees_all_tenants,
)
from inhouse.tenancy.quotas import parse_changes
from inhouse.tenancy.usage_report import Grouping, UsageQuery, as_rows, to_csv, usage_report

router = APIRouter(prefix="/admin", tags=["admin"])


TenantsReader = Annotated[Principal, Depends(Require(Permission.TENANTS_READ))]
TenantsManager = Annotated[Principal, Depends(Require(Permission.TENANTS_MANAGE))]
KeyOwner = Annotated[Principal, Depends(Require(Permission.KEYS_OWN))]
QuotasReader = Annotated[Principal, Depends(Require(Permission.QUOTAS_READ))]
QuotasManager = Annotated[Principal, Depends(Require(Permission.QUOTAS_MANAGE))]
UsageReader = Annotated[Principal, Depends(Require(Permission.USAGE_READ))]
AuditReader = Annotated[Principal, Depends(Require(Permission.AUDIT_READ))]


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(services: ServicesDep, principal: TenantsReader) -> list[TenantOut]:
    tenants = services.control.tenants
    if sees_all_tenants(principal):
        return [TenantOut.of(t) for t in tenants.list_tenants()]
    return [TenantOut.of(tenants.get_tenant(principal.tenant_name))]


@router.post("/tenants", response_model=TenantOut, status_code=201)
def create_tenant(
    body: TenantCreate, services: ServicesDep, principal: TenantsManager
) -> TenantOut:
    return TenantOut.of(services.control.tenants.create_tenant(body.name, actor=principal.key_id))


@router.get("/tenants/{tenant}", response_model=TenantOut)
def get_tenant(tenant: Text, services: ServicesDep, principal: TenantsReader) -> TenantOut:
    scope_tenant(principal, tenant)
    return TenantOut.of(services.control.tenants.get_tenant(tenant))


@router.get("/tenants/{tenant}/keys", response_model=list[KeyOut])
def list_keys(tenant: Text, services: ServicesDep, principal: KeyOwner) -> list[KeyOut]:
    scope_tenant(principal, tenant, changes=True)
    owner = None if manages_all_keys(principal) else principal.key_id
    return [KeyOut.of(k) for k in services.control.tenants.list_keys(tenant, owner=owner)]


@router.post("/tenants/{tenant}/keys", response_model=KeyCreated, status_code=201)
def create_key(
    tenant: Text, body: KeyCreate, services: ServicesDep, principal: KeyOwner
) -> KeyCreated:
    scope_tenant(principal, tenant, changes=True)
    authorize_key_role(principal, body.role)
    info, plaintext = services.control.tenants.create_key(
        tenant,
        body.role,
        body.name,
        actor=principal.key_id,
        created_by=principal.key_id,
        flows_only=body.flows_only,
    )
    return KeyCreated(**KeyOut.of(info).model_dump(), key=plaintext)


@router.delete("/tenants/{tenant}/keys/{key_id}", response_model=KeyOut)
def revoke_key(tenant: Text, key_id: Text, services: ServicesDep, principal: KeyOwner) -> KeyOut:
    scope_tenant(principal, tenant, changes=True)
    owner = None if manages_all_keys(principal) else principal.key_id
    info = services.control.tenants.revoke_key(
        key_id, actor=principal.key_id, tenant_name=tenant, owner=owner
    )
    return KeyOut.of(info)


@router.get("/tenants/{tenant}/quotas", response_model=QuotaOut)
def get_quotas(
    tenant: Text,
    services: ServicesDep,
    principal: QuotasReader,
    key: Annotated[Text | None, Query(description="a key id: that key's own quota")] = None,
) -> QuotaOut:
    scope_tenant(principal, tenant)
    return QuotaOut.of(tenant, key, services.control.quotas.get(tenant, key))


@router.patch("/tenants/{tenant}/quotas", response_model=QuotaOut)
def update_quotas(
    tenant: Text,
    body: QuotaPatch,
    services: ServicesDep,
    principal: QuotasManager,
    key: Annotated[Text | None, Query(description="a key id: set that key's own quota")] = None,
) -> QuotaOut:
    scope_tenant(principal, tenant)
    changes = parse_changes(body.model_dump(exclude_unset=True))
    quota = services.control.quotas.update(tenant, changes, key, actor=principal.key_id)
    return QuotaOut.of(tenant, key, quota)


@router.get(
    "/usage",
    response_model=UsageReport,
    responses={200: {"content": {"text/csv": {}}}},
)
def usage(
    services: ServicesDep,
    principal: UsageReader,
    tenant: Annotated[Text | None, Query(description="default: the caller's tenant")] = None,
    key: Annotated[Text | None, Query(description="only this key id")] = None,
    by: Annotated[list[Grouping] | None, Query(description="day, model, key, tenant")] = None,
    since: Annotated[date | None, Query(description="first day, UTC, inclusive")] = None,
    until: Annotated[date | None, Query(description="last day, UTC, inclusive")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> UsageReport | Response:
    tenant_id = _listed_tenant(services, principal, tenant)
    group_by = tuple(by or (Grouping.DAY,))
    lines = usage_report(
        services.control.db,
        UsageQuery(tenant_id=tenant_id, key_id=key, group_by=group_by, since=since, until=until),
    )
    if format == "csv":
        return Response(to_csv(lines, group_by), media_type="text/csv")
    return UsageReport(data=[UsageRowOut(**row) for row in as_rows(lines, group_by)])


@router.get("/audit", response_model=AuditList)
def audit(
    services: ServicesDep,
    principal: AuditReader,
    tenant: Annotated[Text | None, Query(description="default: the caller's tenant")] = None,
    since: Annotated[datetime | None, Query(description="from this moment, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="to this moment, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AuditList:
    tenant_id = _listed_tenant(services, principal, tenant)
    entries = services.control.audit.entries(
        tenant_id=tenant_id, since=since, until=until, limit=limit
    )
    return AuditList(data=[AuditEntryOut(**e.as_dict()) for e in entries])


def _listed_tenant(services: Services, principal: Principal, tenant: str | None) -> str | None:
    """Whose rows a listing shows: the named tenant (if in scope), else the caller's own;
    the platform tenant's callers see every tenant's (None) when they name none."""
    if tenant is not None:
        scope_tenant(principal, tenant)
        return services.control.tenants.get_tenant(tenant).id
    return None if sees_all_tenants(principal) else principal.tenant_id
