"""The node registry: the fleet's nodes in the store, validated, every change audited.

Nodes come in three ways, all ending here: an operator's ``inhouse nodes add``, the
admin API (``POST /admin/nodes``), and an ``inhouse node`` registering itself with the
gateway (``register_self``, upserted by URL, repeated as a heartbeat).

A node's bearer token is never stored: a node names the gateway's environment variable
that holds it (``token_env``, by default ``INHOUSE_NODE_TOKEN``, the fleet's token), and
``NodeRegistry.token`` is the one place that reads it: only a variable the secret rule
allows (``security.secret_variables``), checked at registration and again at each read,
so that a row in the store cannot make the gateway send another of its secrets to a node.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inhouse.errors import (
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from inhouse.fleet.nodes import NodeKind, NodeSpec
from inhouse.protocol.types import Tier
from inhouse.registry.models import MODEL_NAME
from inhouse.security.api_keys import new_id
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.envelope import DecryptionError
from inhouse.security.keyring import Keyring
from inhouse.security.secret_variables import SecretVariables
from inhouse.store.db import Database
from inhouse.store.tables import NodeRow, TenantRow, utcnow

NODE_TOKEN_ENV = "INHOUSE_NODE_TOKEN"
"""The fleet's node token: what ``inhouse node`` requires and what the gateway sends."""

NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
"""Like model names, without ``/``: a node's name is one segment of ``/admin/nodes/NAME``."""

LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
MAX_CAPACITY = 1_000_000
_MAX_BYTES = 2**63 - 1
_MAX_URL = 512
_MAX_NODE_MODEL = 256
_MAX_LABEL_VALUE = 256
_MAX_LABELS = 64


def normalise_url(url: str) -> str:
    """An http(s) URL with a host → the node's OpenAI base URL, ending in ``/v1``.

    ``http://gpu-1:8000``, ``http://gpu-1:8000/`` and ``http://gpu-1:8000/v1/`` all give
    ``http://gpu-1:8000/v1``; a path prefix (a reverse proxy's) is kept. Credentials,
    queries and fragments are refused (a token belongs in an environment variable),
    and error messages never repeat them.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        raise InvalidRequestError(
            "invalid URL: use http(s)://host[:port][/v1]", param="url"
        ) from None
    shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"invalid URL {shown!r}: use http(s)://host[:port][/v1]", param="url"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError(
            "a node URL must not carry credentials: put the token in an environment "
            "variable and name it with token_env",
            param="url",
        )
    if parts.query or parts.fragment:
        raise InvalidRequestError(
            f"invalid URL {shown!r}...: no query or fragment (a token belongs in token_env)",
            param="url",
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise InvalidRequestError("invalid URL: it contains spaces or control characters",
                                  param="url")  # fmt: skip
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{host}:{port}" if port is not None else host
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    normalised = urlunsplit((parts.scheme.lower(), netloc, path, "", ""))
    if len(normalised) > _MAX_URL:
        raise InvalidRequestError(f"URL longer than {_MAX_URL} characters", param="url")
    return normalised


def default_name(url: str) -> str:
    """``host-port`` of a node URL (``gpu-1-8000``), the name when none is given."""
    parts = urlsplit(normalise_url(url))
    host = (parts.hostname or "node").replace("[", "").replace("]", "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}-{port}"[:128]


def check_models(models: Mapping[str, str]) -> dict[str, str]:
    """Public model name → the node's own name for it; at least one."""
    if not models:
        raise InvalidRequestError("a node serves at least one model", param="models")
    checked: dict[str, str] = {}
    for public, own in models.items():
        if public.startswith("flow:") or not MODEL_NAME.match(public):
            raise InvalidRequestError(
                f"invalid model name {public!r}: 1-128 letters, digits or . _ : / -",
                param="models",
            )
        own = own.strip() or public
        if len(own) > _MAX_NODE_MODEL or any(ord(ch) < 32 for ch in own):
            raise InvalidRequestError(f"invalid node model name {own!r}", param="models")
        checked[public] = own
    return checked


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > _MAX_LABELS:
        raise InvalidRequestError(f"at most {_MAX_LABELS} labels", param="labels")
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            raise InvalidRequestError(
                f"invalid label {key!r}: 1-63 letters, digits or . _ / -", param="labels"
            )
        if len(value) > _MAX_LABEL_VALUE or any(ord(ch) < 32 for ch in value):
            raise InvalidRequestError(f"invalid value of label {key!r}", param="labels")
    return dict(labels)


def _check_name(name: str) -> str:
    if not NODE_NAME.match(name):
        raise InvalidRequestError(
            f"invalid node name {name!r}: 1-128 letters, digits or . _ : -", param="name"
        )
    return name


def _check_capacity(capacity: int) -> int:
    if not 1 <= capacity <= MAX_CAPACITY:
        raise InvalidRequestError(
            f"capacity must be 1 to {MAX_CAPACITY} sequences, not {capacity}", param="capacity"
        )
    return capacity


def _check_memory(memory_bytes: int | None) -> int | None:
    if memory_bytes is not None and not 0 < memory_bytes <= _MAX_BYTES:
        raise InvalidRequestError("memory must be a positive number of bytes", param="memory")
    return memory_bytes


def _check_cost(cost: float) -> float:
    if not math.isfinite(cost) or cost < 0:
        raise InvalidRequestError(
            "cost_per_1k_tokens must be a non-negative number", param="cost_per_1k_tokens"
        )
    return float(cost)


def _spec(row: NodeRow) -> NodeSpec:
    return NodeSpec(
        id=row.id,
        name=row.name,
        url=row.url,
        tier=Tier(row.tier),
        kind=NodeKind(row.kind),
        models=json.loads(row.models),
        capacity=row.capacity,
        memory_bytes=row.memory_bytes,
        cost_per_1k_tokens=row.cost_per_1k_tokens,
        labels=json.loads(row.labels),
        token_env=row.token_env,
        fallback=row.fallback,
        tenant_id=row.tenant_id,
        approved=row.approved,
        operator_added=not row.registered_by.startswith(SELF_REGISTERED),
    )


def _tenant_id(session: Session, tenant: str | None) -> str | None:
    if tenant is None:
        return None
    found = session.scalar(select(TenantRow.id).where(TenantRow.name == tenant))
    if found is None:
        raise NotFoundError(f"tenant {tenant!r} does not exist", param="tenant")
    return found


def _json(value: Mapping[str, str]) -> str:
    return json.dumps(dict(value), ensure_ascii=False)  # in the order given


SELF_REGISTERED = "node:"
"""``registered_by`` of a node that registered itself (then its name)."""


def node_token_context(node_id: str, url: str) -> str:
    """A node's own token opens only for its entry and its URL."""
    return f"node:{node_id}:token:{url}"


@dataclass(frozen=True, slots=True)
class SelfRegistrationPolicy:
    """What a node that registers itself may be (``fleet.self_registration_*``)."""

    url_prefixes: tuple[str, ...] = ()
    models: frozenset[str] = frozenset()
    max_capacity: int = 32

    @property
    def allowlisted(self) -> bool:
        return bool(self.url_prefixes and self.models)

    def admits(self, url: str, models: Mapping[str, str]) -> bool:
        return url.startswith(self.url_prefixes) and set(models) <= self.models


@dataclass(frozen=True, slots=True)
class Registered:
    """A registration's outcome: the node, and its token when it is handed over now."""

    spec: NodeSpec
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """What a self-registering node reports: ``register_self``'s input."""

    url: str
    tier: Tier
    models: Mapping[str, str]
    capacity: int
    memory_bytes: int | None = None
    name: str | None = None


class NodeRegistry:
    """The fleet's nodes in the store. Every method raises an ``inhouse.errors`` error
    (400 invalid, 404 unknown, 409 taken) on failure; none returns None for one."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        secrets: SecretVariables | None = None,
        *,
        keyring: Keyring | None = None,
        policy: SelfRegistrationPolicy | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self.secrets = secrets or SecretVariables()
        self._keyring = keyring
        self.policy = policy or SelfRegistrationPolicy()

    def add(
        self,
        url: str,
        *,
        tier: Tier | str,
        kind: NodeKind | str,
        models: Mapping[str, str],
        actor: str,
        name: str | None = None,
        capacity: int = 16,
        memory_bytes: int | None = None,
        cost_per_1k_tokens: float = 0.0,
        labels: Mapping[str, str] | None = None,
        token_env: str = NODE_TOKEN_ENV,
        fallback: bool = False,
        tenant: str | None = None,
    ) -> NodeSpec:
        """Register a node (an operator's act, recorded as ``node.add``).

        ``url`` is normalised to end in ``/v1``; ``name`` defaults to ``host-port``;
        ``tenant`` (a tenant's name) makes the node that tenant's alone. Raises
        InvalidRequestError, NotFoundError (tenant) or ConflictError (name or URL taken).
        """
        url = normalise_url(url)
        now = utcnow()
        row = NodeRow(
            id=new_id("node"),
            name=_check_name(name if name is not None else default_name(url)),
            url=url,
            tier=_enum(Tier, tier, "tier").value,
            kind=_enum(NodeKind, kind, "kind").value,
            models=_json(check_models(models)),
            capacity=_check_capacity(capacity),
            memory_bytes=_check_memory(memory_bytes),
            cost_per_1k_tokens=_check_cost(cost_per_1k_tokens),
            labels=_json(check_labels(labels or {})),
            token_env=self.secrets.check(token_env, param="token_env"),
            fallback=fallback,
            approved=True,  # an operator's own node
            token_delivered=False,
            created_at=now,
            updated_at=now,
            registered_by=actor[:128],
        )

        def add(session: Session) -> tuple[NodeSpec, AuditEvent]:
            row.tenant_id = _tenant_id(session, tenant)
            self._refuse_taken(session, row.name, row.url)
            session.add(row)
            spec = _spec(row)
            details = {"kind": spec.kind.value, "tier": spec.tier.value}
            return spec, _event(actor, "node.add", spec, details)

        try:
            return self._audit.audited(add)
        except IntegrityError:  # taken between the check and the insert
            raise ConflictError(f"node {row.name!r} or its URL is already registered") from None

    def list(self) -> list[NodeSpec]:
        """Every node, oldest first."""
        with self._db.session() as session:
            rows = session.scalars(select(NodeRow).order_by(NodeRow.created_at, NodeRow.name))
            return [_spec(row) for row in rows]

    def get(self, name: str) -> NodeSpec:
        with self._db.session() as session:
            row = session.scalar(select(NodeRow).where(NodeRow.name == name))
            if row is None:
                raise NotFoundError(f"node {name!r} does not exist", param="name")
            return _spec(row)

    def remove(self, name: str, *, actor: str) -> NodeSpec:
        """Remove a node (``node.remove``); gateways stop routing to it within a refresh."""

        def remove(session: Session) -> tuple[NodeSpec, AuditEvent]:
            row = session.scalar(select(NodeRow).where(NodeRow.name == name))
            if row is None:
                raise NotFoundError(f"node {name!r} does not exist", param="name")
            spec = _spec(row)
            session.delete(row)
            return spec, _event(actor, "node.remove", spec, {})

        return self._audit.audited(remove)

    def register_self(self, registration: Registration, *, actor: str | None = None) -> Registered:
        """A node registering itself (an ``inhouse node`` with the fleet's token): upsert
        by URL, under the operator's policy.

        A new node is an ``inhouse`` node with the fleet token, named as given or
        ``host-port``, its claimed capacity capped (``max_registered_capacity``). It waits,
        polled but not routed, until an operator approves it (``approve``), unless the
        operator allows its URL and models outright (``self_registration_urls`` and
        ``_models``: any other is refused). A known one gets the reported models, capacity
        and memory (its tier, name, labels, owner and approval stay). A node an operator
        added is never changed by a registration. When an approved node has not yet been
        given its own token, the answer carries it, once. Audited as ``node.register``
        when something changed; an unchanged heartbeat writes nothing.
        """
        url = normalise_url(registration.url)
        tier = _enum(Tier, registration.tier, "tier")
        models = check_models(registration.models)
        policy = self.policy
        if policy.allowlisted and not policy.admits(url, models):
            raise PermissionDeniedError(
                "this node's URL or models are not among those the operator allows "
                "(INHOUSE_FLEET__SELF_REGISTRATION_URLS, _MODELS)",
                code="node_not_allowed",
            )
        stored_models = _json(models)
        capacity = min(_check_capacity(registration.capacity), policy.max_capacity)
        memory = _check_memory(registration.memory_bytes)
        name = _check_name(registration.name or default_name(url))

        def register(session: Session) -> tuple[Registered, AuditEvent | None]:
            row = session.scalar(select(NodeRow).where(NodeRow.url == url))
            if row is None:
                self._refuse_taken(session, name, url)
                now = utcnow()
                row = NodeRow(
                    id=new_id("node"),
                    name=name,
                    url=url,
                    tier=tier.value,
                    kind=NodeKind.INHOUSE.value,
                    models=stored_models,
                    capacity=capacity,
                    memory_bytes=memory,
                    cost_per_1k_tokens=0.0,
                    labels="{}",
                    token_env=NODE_TOKEN_ENV,
                    fallback=False,
                    approved=policy.allowlisted,
                    token_delivered=False,
                    created_at=now,
                    updated_at=now,
                    registered_by=f"{SELF_REGISTERED}{name}"[:128],
                )
                session.add(row)
                changes: dict[str, Any] = {"created": True, "approved": row.approved}
            else:
                if not row.registered_by.startswith(SELF_REGISTERED):
                    raise PermissionDeniedError(
                        f"{url} is node {row.name!r}, added by an operator: a registration "
                        "cannot change it",
                        code="node_added_by_operator",
                    )
                changes = _changes(row, stored_models, capacity, memory)
                if changes:
                    row.models, row.capacity, row.memory_bytes = stored_models, capacity, memory
                    row.updated_at = utcnow()
            token = None
            if row.approved and row.token_sealed is not None and not row.token_delivered:
                token = self._open_token(row)
                row.token_delivered = True
                changes["token_delivered"] = True
            spec = _spec(row)
            by = actor or f"{SELF_REGISTERED}{spec.name}"
            event = _event(by, "node.register", spec, changes) if changes else None
            return Registered(spec, token), event

        for _ in range(3):  # two replicas taking the first registration at once: retry
            try:
                return self._audit.audited(register)
            except IntegrityError:
                continue
        raise ConflictError(f"node {name!r} is being registered by someone else; retry")

    def approve(self, name: str, *, actor: str) -> NodeSpec:
        """Route to a self-registered node, and issue its own token: the gateway calls it
        with that token from now on (the node receives it once, at its next registration),
        so the fleet's shared token no longer reaches its traffic."""
        if self._keyring is None:
            raise ConfigurationError("approving nodes needs the keyring")
        keyring = self._keyring

        def approve(session: Session) -> tuple[NodeSpec, AuditEvent]:
            row = session.scalar(select(NodeRow).where(NodeRow.name == name))
            if row is None:
                raise NotFoundError(f"node {name!r} does not exist", param="name")
            row.approved = True
            if row.registered_by.startswith(SELF_REGISTERED):
                token = secrets.token_urlsafe(32)
                row.token_sealed = keyring.encrypt(token, node_token_context(row.id, row.url))
                row.token_delivered = False
            row.updated_at = utcnow()
            spec = _spec(row)
            return spec, _event(actor, "node.approve", spec, {})

        return self._audit.audited(approve)

    def token(self, spec: NodeSpec) -> str | None:
        """The bearer token the gateway sends to ``spec``: its own, once it has been handed
        its own, else the one in its variable (an allowed one only); None when unset."""
        return self.tokens([spec]).get(spec.id)

    def tokens(self, specs: Sequence[NodeSpec]) -> dict[str, str | None]:
        """``token`` of each node, in one read of the store."""
        with self._db.session() as session:
            rows = {
                row.id: row
                for row in session.scalars(
                    select(NodeRow).where(NodeRow.id.in_([spec.id for spec in specs]))
                )
            }
            found: dict[str, str | None] = {}
            for spec in specs:
                row = rows.get(spec.id)
                if row is not None and row.token_sealed is not None and row.token_delivered:
                    found[spec.id] = self._open_token(row)
                else:
                    found[spec.id] = self.secrets.read(spec.token_env)
            return found

    def _open_token(self, row: NodeRow) -> str | None:
        if self._keyring is None or row.token_sealed is None:
            return None
        try:
            return self._keyring.decrypt_text(row.token_sealed, node_token_context(row.id, row.url))
        except DecryptionError:
            return None  # moved to another URL or tampered with: never sent

    def _refuse_taken(self, session: Session, name: str, url: str) -> None:
        taken = session.scalar(select(NodeRow).where((NodeRow.name == name) | (NodeRow.url == url)))
        if taken is None:
            return
        if taken.name == name:
            raise ConflictError(f"node {name!r} already exists", param="name")
        raise ConflictError(f"{url} is already registered as node {taken.name!r}", param="url")


def _event(actor: str, action: str, spec: NodeSpec, details: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        actor, action, spec.tenant_id, spec.name, details={"url": spec.url, **details}
    )


def _changes(row: NodeRow, models: str, capacity: int, memory: int | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if row.models != models:
        changes["models"] = sorted(json.loads(models))
    if row.capacity != capacity:
        changes["capacity"] = capacity
    if row.memory_bytes != memory:
        changes["memory_bytes"] = memory
    return changes


E = TypeVar("E", Tier, NodeKind)


def _enum(kind: type[E], value: E | str, param: str) -> E:
    try:
        return kind(value)
    except ValueError:
        choices = " or ".join(member.value for member in kind)
        message = f"invalid {param} {value!r}: use {choices}"
        raise InvalidRequestError(message, param=param) from None
