"""The scheduler: which node of the fleet serves a request, from one snapshot of the fleet.

Pure and deterministic: ``schedule`` looks at ``NodeSnapshot`` values only and gives a
``Placement`` or a ``Refusal``; the gateway does the I/O (sending, retrying on another node
with the failed one in ``exclude``, queueing in ``fleet/dispatch_queue.py`` when the
refusal is retryable).

A node is a **candidate** when it is available, serves the model, is visible to the tenant
(shared, or owned by it) and is not excluded. A candidate **fits** when

- it has memory headroom: free memory >= ``MEMORY_HEADROOM`` (1.2) x the request's
  estimated KV-cache bytes, and
- it has a slot for the request's priority: occupancy < capacity - the slots reserved for
  higher priorities (``PriorityReserve``).

Fitting nodes are searched in three groups, the first non-empty one wins: non-fallback
nodes of the requested tier (``least_loaded``), non-fallback nodes of the other tier
(``fallback_tier=center``), designated fallback nodes of either tier (``fallback_node``).
Within a group: the largest spare fraction of capacity first, then the lower
``cost_per_1k_tokens``, then the node id; so the answer does not depend on the order of
the input (node ids are unique).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from inhouse.fleet.nodes import NodeSnapshot
from inhouse.protocol.types import Priority, Tier

MEMORY_HEADROOM = 1.2
"""Free memory a node must have, as a multiple of the request's estimated KV bytes."""

DEFAULT_KV_BYTES_PER_TOKEN = 512 * 1024
"""KV-cache bytes per token for a model whose shape is unknown: a 7B model with full
multi-head attention in 16 bits (Llama-2-7B: 2 x 32 layers x 4096 x 2 bytes). It covers the
common models up to 70B (Llama-3-70B with grouped-query attention: 320 KiB, Llama-3-8B:
128 KiB), so the headroom rule errs on the safe side; use ``kv_bytes_per_token`` where the
model's shape is known."""


@dataclass(frozen=True, slots=True)
class PriorityReserve:
    """Fractions of each node's capacity kept free for higher priorities.

    A normal request leaves ``normal`` of the slots to high-priority ones; a low request
    leaves ``low`` of them to normal and high ones. High-priority requests may use every
    slot. Slots are rounded down, so a small node reserves nothing rather than shutting
    a class out.
    """

    normal: float = 0.125
    low: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.normal <= self.low < 1.0:
            raise ValueError(
                f"need 0 <= normal <= low < 1, got normal={self.normal}, low={self.low}"
            )

    def reserved(self, priority: Priority, capacity: int) -> int:
        """Slots of a node of ``capacity`` that a request of ``priority`` may not use."""
        if priority == Priority.HIGH:
            return 0
        fraction = self.normal if priority == Priority.NORMAL else self.low
        return math.floor(capacity * fraction + 1e-9)

    def limit(self, priority: Priority, capacity: int) -> int:
        """A request of ``priority`` is placed only while occupancy is below this."""
        return capacity - self.reserved(priority, capacity)


DEFAULT_RESERVE = PriorityReserve()


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    tier: Tier
    """The tier of the chosen node (the other tier when the requested one was full)."""
    reason: str
    """ASCII: ``least_loaded``, ``fallback_tier=center`` or ``fallback_node``."""
    fell_back: bool
    """Not a non-fallback node of the requested tier."""


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    """ASCII, naming what was missing: ``no_node_serves_model``, ``no_available_node``,
    ``no_node_for_tenant``, ``all_nodes_excluded``, ``no_memory_headroom``, or (retryable)
    ``at_capacity`` and ``memory_busy``."""
    retryable: bool
    """True: candidates with memory headroom exist but are full for this priority, or
    candidates short of memory are busy and large enough to have room once their requests
    finish; queue and retry when capacity frees. False: nothing can serve it; answer 503."""


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> int:
    """KV-cache bytes per token of a transformer: keys and values of every layer."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def estimate_kv_bytes(
    prompt_tokens: int, max_tokens: int, bytes_per_token: int = DEFAULT_KV_BYTES_PER_TOKEN
) -> int:
    """KV-cache bytes a request may need at most: its prompt and every new token allowed."""
    if prompt_tokens < 0 or max_tokens < 0 or bytes_per_token < 0:
        raise ValueError("token counts and bytes per token must not be negative")
    return (prompt_tokens + max_tokens) * bytes_per_token


def free_memory(snapshot: NodeSnapshot) -> float | None:
    """Free KV memory in bytes: reported free memory when known, else the unused share of
    the node's memory when both are known, else None (unknown)."""
    load = snapshot.load
    if load.memory_free_bytes is not None:
        return load.memory_free_bytes
    if load.kv_cache_usage is not None and snapshot.spec.memory_bytes is not None:
        usage = min(max(load.kv_cache_usage, 0.0), 1.0)
        return (1.0 - usage) * snapshot.spec.memory_bytes
    return None


def has_headroom(snapshot: NodeSnapshot, needed_bytes: int) -> bool:
    """Free memory >= 1.2 x ``needed_bytes``; a node whose free memory is unknown passes
    (nodes that report nothing, such as plain OpenAI-compatible servers, stay usable)."""
    free = free_memory(snapshot)
    # free / needed >= 6 / 5, without dividing: exact for integers.
    return free is None or free * 5 >= needed_bytes * 6


def _frees_enough(snapshot: NodeSnapshot, needed_bytes: int) -> bool:
    """Short of memory now, but busy and big enough: it has room once requests finish."""
    memory = snapshot.spec.memory_bytes
    return occupancy(snapshot) > 0 and (memory is None or memory * 5 >= needed_bytes * 6)


def occupancy(snapshot: NodeSnapshot) -> int:
    """Sequences on the node: its own count, or this gateway's count when that is higher
    (a poll is seconds old; requests sent since then are in ``in_flight``)."""
    return max(snapshot.load.running + snapshot.load.waiting, snapshot.in_flight)


def schedule(
    nodes: Sequence[NodeSnapshot],
    *,
    model: str,
    tier: Tier,
    priority: Priority,
    tenant_id: str | None,
    needed_bytes: int,
    exclude: frozenset[str] = frozenset(),
    reserve: PriorityReserve | None = None,
) -> Placement | Refusal:
    """The node for one request, by the rules in this module's docstring.

    ``needed_bytes`` is the request's estimated KV-cache size (``estimate_kv_bytes``);
    ``exclude`` holds the ids of nodes already tried for this request; ``reserve``
    defaults to ``PriorityReserve()`` (1/8 of the slots kept from normal requests, 1/4
    from low ones).
    """
    if needed_bytes < 0:
        raise ValueError("needed_bytes must not be negative")
    reserve = DEFAULT_RESERVE if reserve is None else reserve
    served = available = visible = included = roomy = draining = 0
    best: list[tuple[tuple[float, float, str], NodeSnapshot] | None] = [None, None, None]
    for snapshot in nodes:
        spec = snapshot.spec
        if model not in spec.models:
            continue
        served += 1
        if not snapshot.available:
            continue
        available += 1
        if spec.tenant_id is not None and spec.tenant_id != tenant_id:
            continue
        visible += 1
        if spec.id in exclude:
            continue
        included += 1
        if not has_headroom(snapshot, needed_bytes):
            draining += _frees_enough(snapshot, needed_bytes)
            continue
        roomy += 1
        used = occupancy(snapshot)
        if spec.capacity <= 0 or used >= reserve.limit(priority, spec.capacity):
            continue
        group = 2 if spec.fallback else 0 if spec.tier == tier else 1
        key = (-(spec.capacity - used) / spec.capacity, spec.cost_per_1k_tokens, spec.id)
        current = best[group]
        if current is None or key < current[0]:
            best[group] = (key, snapshot)
    for group, found in enumerate(best):
        if found is not None:
            chosen = found[1].spec
            reason = ("least_loaded", f"fallback_tier={tier.other.value}", "fallback_node")[group]
            return Placement(chosen.id, chosen.tier, reason, fell_back=group > 0)
    if roomy:
        return Refusal("at_capacity", retryable=True)
    if draining:
        return Refusal("memory_busy", retryable=True)
    for count, reason in (
        (served, "no_node_serves_model"),
        (available, "no_available_node"),
        (visible, "no_node_for_tenant"),
        (included, "all_nodes_excluded"),
    ):
        if not count:
            return Refusal(reason, retryable=False)
    return Refusal("no_memory_headroom", retryable=False)
