"""The node registry in the store, on SQLite and PostgreSQL: validation, self-registration
by URL, the audit trail, tokens read from the environment."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from inhouse.errors import ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from inhouse.fleet.nodes import NodeKind
from inhouse.fleet.registry import (
    NodeRegistry,
    Registered,
    Registration,
    SelfRegistrationPolicy,
    default_name,
    normalise_url,
)
from inhouse.protocol.types import Tier
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.security.audit import AuditLog
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import Base
from inhouse.tenancy.service import TenantService
from tests.keyrings import audit_for, keyring_for


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_to_head(database.engine)
    TenantService(database, ApiKeyHasher(b"k"), audit_for(database)).create_tenant(
        "bank", actor="test"
    )
    return database


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return audit_for(db)


@pytest.fixture
def registry(db: Database, audit: AuditLog) -> NodeRegistry:
    return NodeRegistry(db, audit, keyring=keyring_for(db))


def test_the_migration_creates_the_table_as_declared(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if "nodes" in repr(d)] == []


def test_add_list_get_remove(registry: NodeRegistry, audit: AuditLog) -> None:
    edge = registry.add(
        "http://GPU-1:8000/",
        tier="edge",
        kind=NodeKind.VLLM,
        models={"qwen-7b": "Qwen/Qwen2.5-7B-Instruct", "llama": "llama"},
        capacity=64,
        memory_bytes=80 * 2**30,
        cost_per_1k_tokens=0.002,
        labels={"site": "shanghai", "rack": "r12"},
        token_env="INHOUSE_NODE_TOKEN_GPU",
        actor="cli:ops",
    )
    assert edge.name == "gpu-1-8000" and edge.url == "http://gpu-1:8000/v1"
    assert edge.id.startswith("node_")
    center = registry.add(
        "https://dc.example/vllm/v1/",
        name="center-a",
        tier=Tier.CENTER,
        kind="openai",
        models={"big": "big"},
        fallback=True,
        tenant="bank",
        actor="cli:ops",
    )
    assert center.url == "https://dc.example/vllm/v1" and center.fallback
    assert center.tenant_id is not None and center.token_env == "INHOUSE_NODE_TOKEN"

    assert [n.name for n in registry.list()] == ["gpu-1-8000", "center-a"]
    got = registry.get("gpu-1-8000")
    assert got == edge
    assert dict(got.models) == {"qwen-7b": "Qwen/Qwen2.5-7B-Instruct", "llama": "llama"}
    assert dict(got.labels) == {"site": "shanghai", "rack": "r12"}
    assert (got.tier, got.kind, got.capacity) == (Tier.EDGE, NodeKind.VLLM, 64)
    assert got.memory_bytes == 80 * 2**30 and got.cost_per_1k_tokens == pytest.approx(0.002)

    assert registry.remove("center-a", actor="key_admin").name == "center-a"
    with pytest.raises(NotFoundError):
        registry.get("center-a")
    with pytest.raises(NotFoundError):
        registry.remove("center-a", actor="key_admin")

    entries = audit.entries()
    actions = [(e.action, e.target, e.actor) for e in entries if e.action.startswith("node.")]
    assert actions == [
        ("node.add", "gpu-1-8000", "cli:ops"),
        ("node.add", "center-a", "cli:ops"),
        ("node.remove", "center-a", "key_admin"),
    ]
    node_entries = [e for e in entries if e.action.startswith("node.")]
    assert json.loads(node_entries[0].details)["url"] == "http://gpu-1:8000/v1"
    assert node_entries[1].tenant_id == center.tenant_id
    assert audit.verify().ok


def test_names_and_urls_are_unique(registry: NodeRegistry) -> None:
    registry.add("http://a:1/v1", tier="edge", kind="openai", models={"m": "m"}, actor="x")
    with pytest.raises(ConflictError, match="already exists"):
        registry.add("http://b:1/v1", name="a-1", tier="edge", kind="openai",
                     models={"m": "m"}, actor="x")  # fmt: skip
    with pytest.raises(ConflictError, match="already registered"):
        registry.add("http://a:1", name="other", tier="edge", kind="openai",
                     models={"m": "m"}, actor="x")  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"url": "ftp://h/v1"}, "url"),
        ({"url": "http:///v1"}, "url"),
        ({"url": "http://user:secret@h/v1"}, "url"),
        ({"url": "http://h/v1?token=secret"}, "url"),
        ({"url": "http://h:notaport/v1"}, "url"),
        ({"name": "has/slash"}, "name"),
        ({"name": ""}, "name"),
        ({"tier": "middle"}, "tier"),
        ({"kind": "tgi"}, "kind"),
        ({"models": {}}, "models"),
        ({"models": {"flow:x": "x"}}, "models"),
        ({"models": {"bad name": "x"}}, "models"),
        ({"capacity": 0}, "capacity"),
        ({"memory_bytes": 0}, "memory"),
        ({"cost_per_1k_tokens": -1.0}, "cost_per_1k_tokens"),
        ({"cost_per_1k_tokens": float("nan")}, "cost_per_1k_tokens"),
        ({"labels": {"bad key": "v"}}, "labels"),
        ({"token_env": "NOT A VAR"}, "token_env"),
        ({"token_env": "INHOUSE_SECRET_KEY"}, "token_env"),
        ({"token_env": "inhouse_master_key"}, "token_env"),
    ],
)
def test_invalid_nodes_are_refused(
    registry: NodeRegistry, changes: dict[str, object], param: str
) -> None:
    fields: dict[str, object] = {
        "url": "http://h:8000/v1",
        "tier": "edge",
        "kind": "vllm",
        "models": {"m": "m"},
        "actor": "x",
        **changes,
    }
    url = fields.pop("url")
    with pytest.raises(InvalidRequestError) as refused:
        registry.add(url, **fields)  # type: ignore[arg-type]
    assert refused.value.param == param
    assert "secret" not in refused.value.message
    assert registry.list() == []


def test_an_unknown_tenant_is_not_found(registry: NodeRegistry) -> None:
    with pytest.raises(NotFoundError):
        registry.add("http://h/v1", tier="edge", kind="vllm", models={"m": "m"}, tenant="ghost",
                     actor="x")  # fmt: skip


def test_urls_are_normalised_to_the_openai_base() -> None:
    assert normalise_url("http://h") == "http://h/v1"
    assert normalise_url("HTTP://H:8080/v1/") == "http://h:8080/v1"
    assert normalise_url("https://proxy/llm/") == "https://proxy/llm/v1"
    assert normalise_url("http://[::1]:9000") == "http://[::1]:9000/v1"
    assert default_name("http://[::1]:9000") == "::1-9000"
    assert default_name("https://dc.example/v1") == "dc.example-443"


def test_the_registry_reads_a_nodes_token_from_its_variable(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = registry.add("http://h/v1", tier="edge", kind="vllm", models={"m": "m"},
                        token_env="INHOUSE_NODE_TOKEN_EDGE", actor="x")  # fmt: skip
    monkeypatch.setenv("INHOUSE_NODE_TOKEN_EDGE", "edge-secret")
    assert registry.token(node) == "edge-secret"
    monkeypatch.setenv("INHOUSE_NODE_TOKEN_EDGE", "")
    assert registry.token(node) is None


def test_a_node_row_pointed_at_another_variable_sends_nothing(
    registry: NodeRegistry, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written as the attack: write access to the database, a node row edited to name a
    secret of the gateway's process. The token is not read, so it is never sent."""
    node = registry.add("http://h/v1", tier="edge", kind="vllm", models={"m": "m"},
                        token_env="INHOUSE_NODE_TOKEN_EDGE", actor="x")  # fmt: skip
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-cloud-password")
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE nodes SET token_env = 'AWS_SECRET_ACCESS_KEY' WHERE name = 'h-80'"
        )
    assert registry.token(registry.get(node.name)) is None


def test_self_registration_upserts_by_url_and_audits_only_changes(
    registry: NodeRegistry, audit: AuditLog
) -> None:
    first = registry.register_self(
        Registration(url="http://10.0.0.5:9000", tier=Tier.EDGE, models={"small": "small"},
                     capacity=32, memory_bytes=16 * 2**30)
    ).spec  # fmt: skip
    assert (first.name, first.kind, first.url) == ("10.0.0.5-9000", NodeKind.INHOUSE,
                                                  "http://10.0.0.5:9000/v1")  # fmt: skip
    assert first.token_env == "INHOUSE_NODE_TOKEN" and first.capacity == 32
    same = registry.register_self(
        Registration(url="http://10.0.0.5:9000/v1", tier=Tier.EDGE, models={"small": "small"},
                     capacity=32, memory_bytes=16 * 2**30)
    ).spec  # fmt: skip
    assert same == first
    changed = registry.register_self(
        Registration(url="http://10.0.0.5:9000/v1", tier=Tier.CENTER, models={"big": "big"},
                     capacity=8, memory_bytes=None, name="renamed")
    ).spec  # fmt: skip
    assert changed.id == first.id and changed.name == "10.0.0.5-9000"  # name and tier stay
    assert (dict(changed.models), changed.capacity, changed.memory_bytes) == ({"big": "big"}, 8,
                                                                             None)  # fmt: skip
    assert changed.tier is Tier.EDGE
    assert [n.id for n in registry.list()] == [first.id]

    registered = [e for e in audit.entries() if e.action == "node.register"]
    assert [(e.actor, json.loads(e.details).get("created")) for e in registered] == [
        ("node:10.0.0.5-9000", True),
        ("node:10.0.0.5-9000", None),
    ]
    assert json.loads(registered[1].details)["capacity"] == 8


def test_self_registration_cannot_take_another_nodes_name(registry: NodeRegistry) -> None:
    registry.add("http://a/v1", name="gpu", tier="edge", kind="vllm", models={"m": "m"},
                 actor="x")  # fmt: skip
    with pytest.raises(ConflictError):
        registry.register_self(
            Registration(url="http://b/v1", tier=Tier.EDGE, models={"m": "m"}, capacity=1,
                         name="gpu")
        )  # fmt: skip
    with pytest.raises(InvalidRequestError):
        registry.register_self(
            Registration(url="http://b/v1", tier=Tier.EDGE, models={}, capacity=1)
        )


def register(registry: NodeRegistry, url: str, capacity: int = 8, **models: str) -> Registered:
    return registry.register_self(
        Registration(url=url, tier=Tier.EDGE, models=models or {"m": "m"}, capacity=capacity)
    )


def test_a_node_token_is_no_master_key_to_the_fleet(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written as the attack: a holder of the fleet's node token registers a node of its
    own, claims a huge capacity, and re-registers an operator's node to take it over."""
    monkeypatch.setenv("INHOUSE_NODE_TOKEN", "the-fleet-token-shared-by-all")
    rogue = register(registry, "http://rogue:9000", capacity=10_000, assistant="assistant")
    assert rogue.spec.approved is False  # polled, never routed, until an operator approves
    assert rogue.spec.capacity == 32  # fleet.max_registered_capacity
    assert rogue.token is None
    registry.add("http://gpu-1:8000/v1", tier="center", kind="vllm", models={"m": "m"},
                 actor="cli:ops")  # fmt: skip
    with pytest.raises(PermissionDeniedError, match="added by an operator"):
        register(registry, "http://gpu-1:8000/v1", capacity=1, stolen="x")
    assert dict(registry.get("gpu-1-8000").models) == {"m": "m"}


def test_approval_hands_the_node_its_own_token_once(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INHOUSE_NODE_TOKEN", "the-fleet-token-shared-by-all")
    spec = register(registry, "http://edge-7:9000").spec
    assert registry.token(spec) == "the-fleet-token-shared-by-all"  # polled with it
    approved = registry.approve(spec.name, actor="cli:ops")
    assert approved.approved
    assert registry.token(spec) == "the-fleet-token-shared-by-all"  # until it has its own
    handed = register(registry, "http://edge-7:9000").token
    assert handed is not None and handed != "the-fleet-token-shared-by-all"
    assert register(registry, "http://edge-7:9000").token is None  # once only
    assert registry.token(spec) == handed  # the gateway calls it with its own from now on


def test_an_operators_allowlist_admits_matching_nodes_and_refuses_others(
    db: Database, audit: AuditLog
) -> None:
    policy = SelfRegistrationPolicy(("http://10.1.",), frozenset({"small"}), 16)
    registry = NodeRegistry(db, audit, keyring=keyring_for(db), policy=policy)
    assert register(registry, "http://10.1.0.4:9000", small="small").spec.approved
    for url, model in (("http://10.9.0.4:9000", "small"), ("http://10.1.0.5:9000", "big")):
        with pytest.raises(PermissionDeniedError, match="not among"):
            register(registry, url, **{model: model})
