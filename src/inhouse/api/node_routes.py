"""The fleet's nodes over HTTP: the admin API under /admin/nodes, and self-registration.

``GET /admin/nodes`` (nodes:read), ``POST /admin/nodes`` and ``DELETE /admin/nodes/NAME``
(nodes:manage) are the platform tenant's, like ``inhouse nodes``. Unlike the CLI, the
API does not ask the node anything: ``kind`` and ``models`` are given.

``POST /v1/node/register`` is how an ``inhouse node --register GATEWAY`` announces itself
(and repeats every 30 s). A node presents the fleet's token, ``INHOUSE_NODE_TOKEN``,
compared in constant time; a caller presenting an inhouse credential (an ``ih_`` API key
or an ``ihs_`` session) is authenticated as on every route and needs nodes:manage. So:

| the request carries | answer |
| --- | --- |
| no or a malformed ``Authorization`` header | 401 |
| an unknown, revoked or expired inhouse key or session | 401 |
| a valid key without nodes:manage | 403 |
| another token, on a gateway without a node token | 403 ``node_registration_disabled`` |
| another token that is not the node token | 401 ``invalid_node_token`` |
| the node token, ``INHOUSE_FLEET__SELF_REGISTRATION`` off | 403 ``node_registration_disabled`` |
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from inhouse.api.access import Require, caller_allowed
from inhouse.api.admin_schemas import Text
from inhouse.api.deps import ServicesDep, services_of
from inhouse.errors import AuthenticationError, PermissionDeniedError
from inhouse.fleet.nodes import NodeKind, NodeSpec
from inhouse.fleet.registry import MAX_CAPACITY, NODE_TOKEN_ENV, Registration
from inhouse.gateway.services import Services
from inhouse.protocol.bearer import bearer_token
from inhouse.protocol.types import Tier
from inhouse.security.api_keys import KEY_PREFIX
from inhouse.tenancy.models import Principal
from inhouse.tenancy.permissions import Permission
from inhouse.tenancy.quotas import parse_bytes
from inhouse.tenancy.users import SESSION_PREFIX

router = APIRouter(tags=["nodes"])

NodesReader = Annotated[Principal, Depends(Require(Permission.NODES_READ))]
NodesManager = Annotated[Principal, Depends(Require(Permission.NODES_MANAGE))]

Models = dict[Text, Text] | list[Text]
"""``{"public": "node's own name"}``, or names: ``["a", "b=node-b"]`` as ``--models`` reads."""


Bytes = Annotated[int, Field(gt=0, le=2**63 - 1)]


def _models(models: Models) -> dict[str, str]:
    if isinstance(models, dict):
        return dict(models)
    pairs = (item.partition("=") for item in models)
    return {public.strip(): (own.strip() or public.strip()) for public, _, own in pairs}


def _memory(memory: int | str | None) -> int | None:
    return parse_bytes(memory, "memory") if isinstance(memory, str) else memory


class NodeCreate(BaseModel):
    """The fields of ``inhouse nodes add``, in JSON."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[Text, Field(max_length=512, description="e.g. http://gpu-1:8000/v1")]
    tier: Tier
    kind: NodeKind
    models: Models = Field(description="what it serves: names, or public name → node's name")
    token_env: Annotated[Text, Field(max_length=128)] = NODE_TOKEN_ENV
    name: Annotated[Text, Field(max_length=128)] | None = Field(
        default=None, description="default: host-port"
    )
    capacity: int = Field(default=16, ge=1, le=MAX_CAPACITY)
    memory: Bytes | Annotated[Text, Field(max_length=32)] | None = Field(
        default=None, description="bytes, or 80Gi"
    )
    cost_per_1k_tokens: float = Field(
        default=0.0, ge=0.0, allow_inf_nan=False,
        validation_alias=AliasChoices("cost_per_1k_tokens", "cost_per_1k"),
    )  # fmt: skip
    labels: dict[Annotated[Text, Field(max_length=63)], Annotated[Text, Field(max_length=256)]] = (
        Field(default_factory=dict)
    )
    fallback: bool = False
    tenant: Text | None = Field(default=None, description="only this tenant's; default: shared")


class NodeOut(BaseModel):
    id: str
    name: str
    url: str
    tier: Tier
    kind: NodeKind
    models: dict[str, str]
    capacity: int
    memory_bytes: int | None
    cost_per_1k_tokens: float
    labels: dict[str, str]
    token_env: str
    fallback: bool
    tenant: str | None
    approved: bool
    """False: it registered itself and waits for an operator (polled, not routed)."""

    @classmethod
    def of(cls, spec: NodeSpec, tenant_names: dict[str, str]) -> NodeOut:
        return cls(
            id=spec.id,
            name=spec.name,
            url=spec.url,
            tier=spec.tier,
            kind=spec.kind,
            models=dict(spec.models),
            capacity=spec.capacity,
            memory_bytes=spec.memory_bytes,
            cost_per_1k_tokens=spec.cost_per_1k_tokens,
            labels=dict(spec.labels),
            token_env=spec.token_env,
            fallback=spec.fallback,
            tenant=tenant_names.get(spec.tenant_id) if spec.tenant_id else None,
            approved=spec.approved,
        )


class NodeRegistered(NodeOut):
    token: str | None = Field(
        default=None,
        description="the node's own token, given once after an operator approved it: the "
        "gateway calls the node with it from now on",
    )


class NodeRegistration(BaseModel):
    """What an ``inhouse node`` reports about itself."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[Text, Field(max_length=512, description="where the gateway reaches it")]
    tier: Tier
    models: Models
    capacity: int = Field(ge=1, le=MAX_CAPACITY, description="its max running sequences")
    memory_bytes: Bytes | None = None
    name: Annotated[Text, Field(max_length=128)] | None = None


class NodeCaller(Require):
    """The caller of ``POST /v1/node/register``: a node with the fleet's token, or a
    principal allowed nodes:manage (see the module's table). It is a ``Require`` so
    that the route declares nodes:manage like every other node route."""

    def __init__(self) -> None:
        super().__init__(Permission.NODES_MANAGE)

    async def __call__(self, request: Request) -> Any:  # str | None: see NodeOrManager
        """None for a node; the key id of a principal. Raises 401 or 403."""
        try:
            token = bearer_token(request.headers.get("authorization"))
        except AuthenticationError:
            token = ""  # answered as on every route, below
        if not token or token.startswith((KEY_PREFIX, SESSION_PREFIX)):
            principal = await caller_allowed(request, self.permission)
            return principal.key_id
        expected = services_of(request).settings.node_token
        if expected is None or not expected.get_secret_value():
            raise PermissionDeniedError(
                "self-registration is off: this gateway has no node token (INHOUSE_NODE_TOKEN)",
                code="node_registration_disabled",
            )
        if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
            raise AuthenticationError("Incorrect node token.", code="invalid_node_token")
        if not services_of(request).settings.fleet.self_registration:
            raise PermissionDeniedError(
                "self-registration is off on this gateway (INHOUSE_FLEET__SELF_REGISTRATION)",
                code="node_registration_disabled",
            )
        return None


NodeOrManager = Annotated[str | None, Depends(NodeCaller())]
"""None: a node with the fleet's token; else the key id of a caller with nodes:manage."""


def _tenant_names(services: Services) -> dict[str, str]:
    return {t.id: t.name for t in services.control.tenants.list_tenants()}


@router.get("/admin/nodes", response_model=list[NodeOut])
def list_nodes(services: ServicesDep, _principal: NodesReader) -> list[NodeOut]:
    names = _tenant_names(services)
    return [NodeOut.of(spec, names) for spec in services.control.nodes.list()]


@router.post("/admin/nodes", response_model=NodeOut, status_code=201)
def add_node(body: NodeCreate, services: ServicesDep, principal: NodesManager) -> NodeOut:
    spec = services.control.nodes.add(
        body.url,
        tier=body.tier,
        kind=body.kind,
        models=_models(body.models),
        actor=principal.key_id,
        name=body.name,
        capacity=body.capacity,
        memory_bytes=_memory(body.memory),
        cost_per_1k_tokens=body.cost_per_1k_tokens,
        labels=body.labels,
        token_env=body.token_env,
        fallback=body.fallback,
        tenant=body.tenant,
    )
    return NodeOut.of(spec, _tenant_names(services))


@router.delete("/admin/nodes/{name}", response_model=NodeOut)
def remove_node(name: Text, services: ServicesDep, principal: NodesManager) -> NodeOut:
    spec = services.control.nodes.remove(name, actor=principal.key_id)
    return NodeOut.of(spec, _tenant_names(services))


@router.post("/v1/node/register", response_model=NodeRegistered)
def register_node(
    body: NodeRegistration, services: ServicesDep, caller: NodeOrManager
) -> NodeRegistered:
    """A node announces (or re-announces) itself; upserted by URL, under the operator's
    policy: a new node waits for approval (``POST /admin/nodes/NAME/approve``)."""
    registration = Registration(
        url=body.url,
        tier=body.tier,
        models=_models(body.models),
        capacity=body.capacity,
        memory_bytes=body.memory_bytes,
        name=body.name,
    )
    registered = services.control.nodes.register_self(registration, actor=caller)
    out = NodeOut.of(registered.spec, _tenant_names(services))
    return NodeRegistered(**out.model_dump(), token=registered.token)


@router.post("/admin/nodes/{name}/approve", response_model=NodeOut)
def approve_node(name: Text, services: ServicesDep, principal: NodesManager) -> NodeOut:
    """Route to a node that registered itself; it is given its own token."""
    spec = services.control.nodes.approve(name, actor=principal.key_id)
    return NodeOut.of(spec, _tenant_names(services))
