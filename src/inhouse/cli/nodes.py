"""``inhouse nodes``: the fleet's remote nodes (inhouse nodes, vLLM, llama.cpp, Ollama)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import typer

from inhouse.cli.common import (
    JSON_OPTION,
    cli_actor,
    console,
    control_plane,
    error_console,
    fail,
    print_rows,
    settings_or_exit,
)
from inhouse.config import Settings
from inhouse.engine.remote import create_session
from inhouse.errors import InhouseError
from inhouse.fleet.health import HttpProber
from inhouse.fleet.nodes import NodeKind, NodeSpec
from inhouse.fleet.registry import NODE_TOKEN_ENV, normalise_url
from inhouse.protocol.types import Tier
from inhouse.security.secret_variables import SecretVariables
from inhouse.tenancy.quotas import parse_bytes

app = typer.Typer(help="Fleet nodes: remote model servers the gateway routes to, by tier.")


def parse_models(value: str) -> dict[str, str]:
    """``a,b=B`` → ``{"a": "a", "b": "B"}``: the name callers use, and the node's own."""
    models: dict[str, str] = {}
    for item in value.split(","):
        public, _, own = item.strip().partition("=")
        public, own = public.strip(), own.strip()
        if not public:
            raise fail(f"--models {value!r}: use name or name=node_model_name, comma-separated")
        models[public] = own or public
    return models


def parse_labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--label {item!r}: use key=value")
        labels[key.strip()] = value.strip()
    return labels


def format_models(models: Mapping[str, str]) -> str:
    return ",".join(name if own == name else f"{name}={own}" for name, own in models.items())


@dataclass(frozen=True, slots=True)
class Probe:
    """What a node said: its kind (None: undetected), its models (None: not listed)."""

    kind: NodeKind | None
    served: list[str] | None
    problem: str | None = None


async def probe(settings: Settings, url: str, token: str | None, kind: NodeKind | None) -> Probe:
    """Ask the node what it is (unless ``kind`` is given) and which models it lists."""
    session = create_session(settings.gateway)  # the gateway's TLS: CA, client certificate
    try:
        prober = HttpProber(session, settings.fleet.poll_timeout_seconds)
        try:
            kind = kind or await prober.detect_kind(url, token)
        except InhouseError as exc:
            return Probe(None, None, exc.message)
        try:
            return Probe(kind, await prober.models(url, token))
        except InhouseError as exc:
            return Probe(kind, None, exc.message)
    finally:
        await session.close()


@app.command("add")
def add(
    url: str = typer.Argument(..., help="the node's base URL, e.g. http://gpu-1:8000/v1"),
    tier: Tier = typer.Option(..., "--tier", help="edge (small, close) or center (large)"),
    models: str | None = typer.Option(
        None,
        "--models",
        help="models it serves: name or name=node_model_name, comma-separated "
        "(default: the ids of the node's GET /v1/models)",
    ),
    token_env: str = typer.Option(
        NODE_TOKEN_ENV,
        "--token-env",
        help="the gateway's environment variable holding the node's bearer token",
    ),
    name: str | None = typer.Option(None, "--name", help="default: host-port"),
    kind: NodeKind | None = typer.Option(
        None, "--kind", help="inhouse, vllm or openai (default: detected)"
    ),
    capacity: int = typer.Option(16, "--capacity", help="sequences it runs at once at speed"),
    memory: str | None = typer.Option(
        None, "--memory", help="accelerator memory for the KV cache: bytes or 80Gi"
    ),
    cost_per_1k: float = typer.Option(0.0, "--cost-per-1k", help="cost per 1000 tokens"),
    label: list[str] = typer.Option([], "--label", help="key=value; repeat for more"),
    fallback: bool = typer.Option(
        False, "--fallback", help="use it only when no other node qualifies"
    ),
    tenant: str | None = typer.Option(
        None, "--tenant", help="only this tenant's requests go there (default: shared)"
    ),
) -> None:
    """Register a node. Without --kind or --models, the node is asked (with its token)."""
    settings = settings_or_exit()
    secrets = SecretVariables(settings.gateway.secret_variables)
    try:
        base = normalise_url(url)
        secrets.check(token_env, param="token_env")
        memory_bytes = parse_bytes(memory, "memory") if memory is not None else None
    except InhouseError as exc:
        raise fail(exc.message) from None
    given = parse_models(models) if models is not None else None
    labels = parse_labels(label)
    token = secrets.read(token_env)
    if token is None:
        error_console.print(
            f"warning: {token_env} is not set here: the node is asked without a token",
            highlight=False,
        )
    found = asyncio.run(probe(settings, base, token, kind))
    if found.kind is None or (given is None and not found.served):
        problem = found.problem or f"GET {base}/models lists no models: give --models"
        raise fail(f"cannot ask the node at {base}: {problem}")
    if found.problem is not None:
        error_console.print(
            f"warning: the node at {base} does not answer ({found.problem}); registered anyway",
            highlight=False,
        )
    found_kind, served = found.kind, found.served
    if kind is None:
        console.print(f"detected kind: {found_kind.value}", highlight=False)
    if given is None:
        given = {model: model for model in served or ()}
        console.print(f"models from the node: {', '.join(given)}", highlight=False)
    elif served is not None and (missing := sorted(set(given.values()) - set(served))):
        error_console.print(
            f"warning: the node does not list {', '.join(missing)} (it lists "
            f"{', '.join(served) or 'none'})",
            highlight=False,
        )
    with control_plane(settings) as control:
        spec = control.nodes.add(
            base,
            tier=tier,
            kind=found_kind,
            models=given,
            actor=cli_actor(),
            name=name,
            capacity=capacity,
            memory_bytes=memory_bytes,
            cost_per_1k_tokens=cost_per_1k,
            labels=labels,
            token_env=token_env,
            fallback=fallback,
            tenant=tenant,
        )
    console.print(
        f"added {spec.kind.value} node {spec.name} ({spec.tier.value}) at {spec.url}: "
        f"{format_models(spec.models)}",
        highlight=False,
    )


@app.command("list")
def list_nodes(as_json: bool = JSON_OPTION) -> None:
    """List nodes."""
    with control_plane() as control:
        nodes = control.nodes.list()
        tenant_names = {t.id: t.name for t in control.tenants.list_tenants()}
    rows = [_row(node, tenant_names) for node in nodes]
    columns = ("name", "url", "tier", "kind", "models", "capacity", "memory", "labels",
               "tenant", "fallback", "approved")  # fmt: skip
    print_rows(columns, rows, as_json=as_json)


def _row(node: NodeSpec, tenant_names: Mapping[str, str]) -> tuple[str, ...]:
    owner = tenant_names.get(node.tenant_id, "") if node.tenant_id else "(all)"
    return (
        node.name,
        node.url,
        node.tier.value,
        node.kind.value,
        format_models(node.models),
        str(node.capacity),
        str(node.memory_bytes) if node.memory_bytes is not None else "",
        ",".join(f"{k}={v}" for k, v in node.labels.items()),
        owner,
        "yes" if node.fallback else "no",
        "yes" if node.approved else "waiting",
    )


@app.command("approve")
def approve(name: str) -> None:
    """Route to a node that registered itself (until then it is polled, not routed); it is
    given its own token at its next registration, which replaces the fleet's for it."""
    with control_plane() as control:
        spec = control.nodes.approve(name, actor=cli_actor())
    console.print(f"approved node {spec.name} ({spec.url})", highlight=False)


@app.command("remove")
def remove(name: str) -> None:
    """Remove a node; gateways stop routing to it within seconds."""
    with control_plane() as control:
        spec = control.nodes.remove(name, actor=cli_actor())
    console.print(f"removed node {spec.name}", highlight=False)
