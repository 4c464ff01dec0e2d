"""Node health: what each kind of node reports, how it is asked, and the fleet monitor.

What is read from each kind of node (``NodeKind``):

- inhouse: ``GET {url}/node/status``: running, waiting, free memory, tokens per second
  (a node still loading its model counts as a failed poll);
- vllm: ``GET {base}/metrics`` (``base`` is the URL without ``/v1``):
  ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and the KV-cache usage;
- openai: ``GET {url}/models``: health only, a 200 with a model list.

Every poll carries ``Authorization: Bearer <token>`` when the node has one. The parsers
are pure; ``HttpProber`` does the HTTP; ``FleetMonitor`` is the async shell the gateway
holds: it polls, keeps one circuit breaker per node, and answers ``snapshots()``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inhouse.config import FleetSettings, GatewaySettings
from inhouse.engine.remote import create_session
from inhouse.errors import InhouseError, NotFoundError, UpstreamError
from inhouse.fleet.breaker import BreakerState, CircuitBreaker
from inhouse.fleet.nodes import NodeKind, NodeLoad, NodeSnapshot, NodeSpec
from inhouse.fleet.registry import NodeRegistry

log = logging.getLogger(__name__)

VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
"""The KV-cache gauge: named ``kv_cache_usage_perc`` since vLLM's V1 engine, and
``gpu_cache_usage_perc`` before. Both are fractions 0..1 despite the name."""


# -- parsers (pure) ------------------------------------------------------------------


class _InhouseStatus(BaseModel):
    """The fields of an ``inhouse node``'s ``NodeStatus`` the fleet reads."""

    model_config = ConfigDict(extra="ignore")
    ready: bool = True
    running: int = Field(ge=0)
    waiting: int = Field(ge=0)
    memory_available_bytes: int | None = Field(default=None, ge=0)
    tokens_per_second: float | None = Field(default=None, ge=0)


def parse_inhouse_status(status: Any, *, observed_at: float = 0.0) -> NodeLoad:
    """An ``inhouse node``'s ``GET /v1/node/status`` JSON → its load.

    Raises UpstreamError when the object is not a node status, or when the node is
    still loading its model (``ready: false``): such a node must not get requests.
    """
    try:
        parsed = _InhouseStatus.model_validate(status)
    except ValidationError as exc:
        raise UpstreamError(f"not an inhouse node status: {exc.errors()[0]['msg']}") from None
    if not parsed.ready:
        raise UpstreamError("the node is still loading its model")
    return NodeLoad(
        running=parsed.running,
        waiting=parsed.waiting,
        memory_free_bytes=parsed.memory_available_bytes,
        tokens_per_second=parsed.tokens_per_second,
        observed_at=observed_at,
    )


def parse_vllm_metrics(text: str, *, observed_at: float = 0.0) -> NodeLoad:
    """vLLM's Prometheus ``/metrics`` text → its load.

    Running and waiting are summed over every label set (one per model engine, e.g.
    ``engine="0"`` and ``engine="1"`` of a data-parallel server); the KV-cache usage is
    their mean (equal engines: the share of all blocks in use). Raises UpstreamError
    when the text does not parse or has no ``vllm:num_requests_running``.
    """
    running: list[float] = []
    waiting: list[float] = []
    kv_cache: dict[str, list[float]] = {name: [] for name in VLLM_KV_CACHE_USAGE}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                value = float(sample.value)
                if not math.isfinite(value):
                    continue
                if sample.name == VLLM_RUNNING:
                    running.append(value)
                elif sample.name == VLLM_WAITING:
                    waiting.append(value)
                elif sample.name in kv_cache:
                    kv_cache[sample.name].append(value)
    except ValueError as exc:
        raise UpstreamError(f"vLLM metrics do not parse: {exc}") from None
    if not running:
        raise UpstreamError(f"no {VLLM_RUNNING} in the metrics: is this a vLLM server?")
    usage = next((values for values in kv_cache.values() if values), None)
    return NodeLoad(
        running=round(sum(running)),
        waiting=round(sum(waiting)),
        kv_cache_usage=min(max(sum(usage) / len(usage), 0.0), 1.0) if usage else None,
        observed_at=observed_at,
    )


def parse_model_ids(body: Any) -> list[str]:
    """``GET /v1/models`` JSON → the model ids, in the node's order; raises UpstreamError."""
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise UpstreamError("GET /v1/models did not answer a model list")
    ids = [item["id"] for item in data if isinstance(item, Mapping) and "id" in item]
    return [model_id for model_id in ids if isinstance(model_id, str) and model_id]


# -- asking a node over HTTP ---------------------------------------------------------


def metrics_url(url: str) -> str:
    """Where vLLM serves its metrics: the node URL without its ``/v1``."""
    return url.removesuffix("/v1") + "/metrics"


class Prober(Protocol):
    """Reads one node's load; raises an ``InhouseError`` (UpstreamError) when the node
    does not answer as its kind should."""

    async def poll(self, spec: NodeSpec, token: str | None) -> NodeLoad: ...


class HttpProber:
    """Asks nodes over HTTP(S) with one pooled session; every request is bounded by
    ``timeout`` seconds."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock

    async def get(self, url: str, token: str | None) -> tuple[int, bytes]:
        """Status and body of ``GET url``; raises UpstreamError when there is no answer."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._session.get(
                url, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                return response.status, await response.read()
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{url} unreachable: {type(exc).__name__}") from None
        except TimeoutError:
            raise UpstreamError(f"{url} did not answer in time") from None

    async def get_ok(self, url: str, token: str | None) -> bytes:
        status, body = await self.get(url, token)
        if status != 200:
            hint = " (is the token right?)" if status in (401, 403) else ""
            raise UpstreamError(f"GET {url} answered {status}{hint}")
        return body

    async def poll(self, spec: NodeSpec, token: str | None) -> NodeLoad:
        if spec.kind is NodeKind.INHOUSE:
            body = await self.get_ok(f"{spec.url}/node/status", token)
            return parse_inhouse_status(_json(body), observed_at=self._clock())
        if spec.kind is NodeKind.VLLM:
            body = await self.get_ok(metrics_url(spec.url), token)
            return parse_vllm_metrics(body.decode(errors="replace"), observed_at=self._clock())
        parse_model_ids(_json(await self.get_ok(f"{spec.url}/models", token)))
        return NodeLoad(observed_at=self._clock())

    async def models(self, url: str, token: str | None) -> list[str]:
        """The model ids a node lists at ``GET {url}/models`` (``url`` ends in ``/v1``)."""
        return parse_model_ids(_json(await self.get_ok(f"{url}/models", token)))

    async def detect_kind(self, url: str, token: str | None) -> NodeKind:
        """What kind of node answers at ``url``: a 200 from ``/v1/node/status`` is an
        inhouse node, ``/metrics`` with ``vllm:`` is vLLM, a model list at ``/v1/models``
        is any other OpenAI-compatible server. Raises UpstreamError otherwise."""
        status, body = await self.get(f"{url}/node/status", token)  # unreachable: raises
        if status == 200 and _is_inhouse_status(body):
            return NodeKind.INHOUSE
        status, body = await self.get(metrics_url(url), token)
        if status == 200 and b"vllm:" in body:
            return NodeKind.VLLM
        status, body = await self.get(f"{url}/models", token)
        if status == 200:
            parse_model_ids(_json(body))
            return NodeKind.OPENAI
        hint = ": is the token right?" if status in (401, 403) else ""
        raise UpstreamError(f"cannot tell what kind of node this is: GET {url}/models "
                            f"answered {status}{hint}")  # fmt: skip


def _is_inhouse_status(body: bytes) -> bool:
    try:
        _InhouseStatus.model_validate_json(body)
    except ValidationError:
        return False
    return True


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError("the node did not answer JSON") from None


# -- the monitor (async shell) -------------------------------------------------------


class _Node:
    """What the monitor holds for one node (mutable, owned by the event loop)."""

    __slots__ = ("breaker", "ejected", "in_flight", "load", "spec", "token")

    def __init__(self, spec: NodeSpec, settings: FleetSettings) -> None:
        self.spec = spec
        self.token: str | None = None
        self.load = NodeLoad()
        self.in_flight = 0
        self.ejected = False
        self.breaker = CircuitBreaker(
            settings.failure_threshold, settings.cooldown_seconds, settings.max_cooldown_seconds
        )


class FleetMonitor:
    """The gateway's live view of its nodes: load from polling, health from breakers.

    Lifecycle: ``await start()`` (reads the registry, polls once, then in the
    background), ``await close()``.
    It re-reads the registry every ``registry_refresh_seconds`` and polls every node
    every ``poll_interval_seconds``, concurrently, each poll bounded by
    ``poll_timeout_seconds``. A failed poll counts as a failure in the node's breaker,
    a good one as a success; an ejected (open) node is not polled until its cooldown
    has passed, and then the poll is the half-open probe. Ejection and re-admission are
    logged once each.

    The request path (one event loop; none of these block or await):

    - ``snapshots()`` → what the scheduler chooses from: ``available`` is the breaker
      admitting a request, ``in_flight`` this gateway's own count;
    - ``begin(node_id)`` just before sending a request to the chosen node, and
      ``end(node_id, ok=...)`` exactly once when it is answered. ``ok=False`` is the
      node's failure (unreachable, timed out, 5xx, a broken stream) and counts in its
      breaker; a refusal of the request itself (4xx) is ``ok=True``. Call ``begin``
      in the same step as ``snapshots`` (no ``await`` between): in half-open it takes
      the one probe slot;
    - ``spec(node_id)``, ``token(node_id)`` (the bearer token to send), ``state(node_id)``.

    ``session``: the gateway's pooled aiohttp session; without one the monitor makes
    (and closes) its own from ``gateway`` settings, with the same TLS (CA, client
    certificate) as every upstream. ``prober`` replaces the HTTP polling (tests).
    """

    def __init__(
        self,
        registry: NodeRegistry,
        settings: FleetSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        gateway: GatewaySettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        prober: Prober | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._session = session
        self._owns_session = False
        self._gateway = gateway or GatewaySettings()
        self._clock = clock
        self._prober = prober
        self._nodes: dict[str, _Node] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the registry, poll every node once (at most ``poll_timeout_seconds``:
        the first snapshots already know which nodes answer), then poll in the
        background."""
        if self._prober is None:
            if self._session is None:
                self._session = create_session(self._gateway)
                self._owns_session = True
            self._prober = HttpProber(self._session, self._settings.poll_timeout_seconds,
                                      self._clock)  # fmt: skip
        await self.refresh_now()
        self._task = asyncio.create_task(self._run(), name="fleet monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def refresh_now(self) -> None:
        """Re-read the registry and poll every node once, now; returns when all polls
        have answered or timed out (tests wait for a round with it)."""
        if self._prober is None:
            raise RuntimeError("start the fleet monitor before refreshing it")
        await self._reload()
        await self._poll_all()

    def snapshots(self, now: float | None = None) -> list[NodeSnapshot]:
        """Every registered node as the scheduler sees it at ``now`` (default: the clock)."""
        at = self._clock() if now is None else now
        return [
            NodeSnapshot(
                node.spec,
                node.load,
                node.spec.approved and node.breaker.available(at),  # unapproved: never routed
                node.in_flight,
            )
            for node in self._nodes.values()
        ]

    def begin(self, node_id: str) -> None:
        """A request is being sent to the node (raises NotFoundError for an unknown id)."""
        node = self._node(node_id)
        node.in_flight += 1
        node.breaker.allow(self._clock())  # takes the probe slot in half-open

    def end(self, node_id: str, *, ok: bool) -> None:
        """The request sent after ``begin`` is over; ``ok=False``: the node failed it.
        A node removed from the registry meanwhile is ignored."""
        node = self._nodes.get(node_id)
        if node is None:
            return
        node.in_flight = max(0, node.in_flight - 1)
        if ok:
            self._succeeded(node)
        else:
            self._failed(node, "a request failed")

    def spec(self, node_id: str) -> NodeSpec:
        return self._node(node_id).spec

    def token(self, node_id: str) -> str | None:
        """The bearer token to send to the node, as of the last registry refresh."""
        return self._node(node_id).token

    def state(self, node_id: str) -> BreakerState:
        return self._node(node_id).breaker.state(self._clock())

    def _node(self, node_id: str) -> _Node:
        node = self._nodes.get(node_id)
        if node is None:
            raise NotFoundError(f"node {node_id!r} is not in the fleet", param="node")
        return node

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._settings.poll_interval_seconds
        next_reload = loop.time() + self._settings.registry_refresh_seconds
        started = loop.time()  # start() has just polled
        while True:
            await asyncio.sleep(max(0.0, started + interval - loop.time()))
            started = loop.time()
            try:
                if started >= next_reload:
                    next_reload = started + self._settings.registry_refresh_seconds
                    await self._reload()
                await self._poll_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fleet monitor round failed")

    async def _reload(self) -> None:
        try:
            specs = await asyncio.to_thread(self._registry.list)
            tokens = await asyncio.to_thread(self._registry.tokens, specs)
        except Exception as exc:  # the store is down: keep polling the nodes we know
            log.warning("cannot read the node registry: %s", exc)
            return
        nodes: dict[str, _Node] = {}
        for spec in specs:
            node = self._nodes.get(spec.id) or _Node(spec, self._settings)
            node.spec, node.token = spec, tokens.get(spec.id)
            nodes[spec.id] = node
        self._nodes = nodes

    async def _poll_all(self) -> None:
        await asyncio.gather(*(self._poll(node) for node in list(self._nodes.values())))

    async def _poll(self, node: _Node) -> None:
        assert self._prober is not None
        if not node.breaker.allow(self._clock()):
            return  # ejected and cooling down, or its probe is under way
        try:
            load = await asyncio.wait_for(
                self._prober.poll(node.spec, node.token),
                self._settings.poll_timeout_seconds,
            )
        except (InhouseError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, InhouseError) else "the poll timed out"
            self._failed(node, reason)
        except Exception as exc:
            self._failed(node, f"{type(exc).__name__}: {exc}")
        else:
            node.load = load
            self._succeeded(node)

    def _failed(self, node: _Node, reason: str) -> None:
        now = self._clock()
        before = node.breaker.state(now)
        node.breaker.record_failure(now)
        if node.breaker.state(now) is not BreakerState.OPEN:
            return
        if not node.ejected:
            node.ejected = True
            log.warning(
                "node %s ejected after %d failures in a row (%s); next probe in %.3g s",
                node.spec.name, node.breaker.consecutive_failures, reason,
                node.breaker.cooldown,
            )  # fmt: skip
        elif before is BreakerState.HALF_OPEN:
            log.debug("probe of node %s failed (%s); next in %.3g s", node.spec.name, reason,
                      node.breaker.cooldown)  # fmt: skip

    def _succeeded(self, node: _Node) -> None:
        now = self._clock()
        node.breaker.record_success(now)
        if node.ejected and node.breaker.state(now) is BreakerState.CLOSED:
            node.ejected = False
            log.info("node %s re-admitted: it answers again", node.spec.name)


def by_name(snapshots: Iterable[NodeSnapshot]) -> dict[str, NodeSnapshot]:
    """Snapshots keyed by node name (for logs, tests and the admin listing)."""
    return {snapshot.spec.name: snapshot for snapshot in snapshots}
