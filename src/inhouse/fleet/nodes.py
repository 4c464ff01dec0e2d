"""What the fleet knows of a node: how it was registered, and its load as last observed.

These frozen values are the inputs of the pure router and scheduler; the registry
(``fleet/registry.py``) stores ``NodeSpec`` and the poller (``fleet/health.py``) makes
``NodeLoad``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from inhouse.protocol.types import Tier


class NodeKind(StrEnum):
    INHOUSE = "inhouse"
    """An ``inhouse node``: load from ``GET /v1/node/status``."""
    VLLM = "vllm"
    """vLLM's OpenAI server: load from its Prometheus ``/metrics``."""
    OPENAI = "openai"
    """Any other OpenAI-compatible server (llama.cpp ``llama-server``, Ollama): health
    from ``GET /v1/models``, load only as the gateway's own count of requests in flight."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node as registered."""

    id: str
    name: str
    url: str
    """The OpenAI base URL, ending in ``/v1``."""
    tier: Tier
    kind: NodeKind
    models: Mapping[str, str]
    """Model name callers use → the name the node knows it by (often the same)."""
    capacity: int = 16
    """Sequences the node runs at once at full speed (its batch size)."""
    memory_bytes: int | None = None
    """Accelerator (or host) memory for the KV cache, when known."""
    cost_per_1k_tokens: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    """Free-form: site, department, ..."""
    token_env: str = "INHOUSE_NODE_TOKEN"
    """The gateway's environment variable that holds the node's bearer token."""
    fallback: bool = False
    """Designated fallback: used only when no other node qualifies."""
    tenant_id: str | None = None
    """Owned by one tenant (only it is routed there); None: shared."""
    approved: bool = True
    """False for a self-registered node an operator has not approved: polled, not routed."""
    operator_added: bool = True
    """Added by an operator (CLI, admin API); else it registered itself."""


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """A node's load as last observed (by polling), or unknown fields as None."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float | None = None
    """Fraction 0..1 of the KV cache in use (vLLM), when the node reports it."""
    memory_free_bytes: int | None = None
    tokens_per_second: float | None = None
    observed_at: float = 0.0
    """Monotonic seconds of the observation."""


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node as the scheduler sees it at one instant."""

    spec: NodeSpec
    load: NodeLoad
    available: bool = True
    """Healthy and its circuit breaker admits requests."""
    in_flight: int = 0
    """Requests this gateway has sent there and not yet seen answered."""
