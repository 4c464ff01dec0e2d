"""Requests for models that fleet nodes serve: route by complexity, schedule over the
nodes, send, fail over.

1. **Route.** The request's profile (estimated prompt tokens, turns, ``max_tokens``, task
   keywords, a tier hint from ``X-Inhouse-Tier`` or the flow) and the tenant's (or the
   flow's) routing policy give a tier: ``inhouse.fleet.router``.
2. **Schedule.** ``inhouse.fleet.scheduler`` picks a node from the monitor's snapshots;
   when every candidate is full for the request's priority, the request waits in a
   per-model priority queue (high before normal before low) until a node has room or
   ``queue_timeout_seconds`` pass (429 ``fleet_busy``).
3. **Send and fail over.** A node that fails before answering (unreachable, timed out,
   5xx) counts against its circuit breaker and the request goes to another node, at
   most ``max_attempts`` nodes in all; a stream is retried only while nothing has been
   sent to the client, and a stream that breaks later ends with an SSE error event.
   Usage is recorded once per request, whatever the attempts.

The answer carries ``X-Inhouse-Node`` (the node's name), ``X-Inhouse-Tier`` and
``X-Inhouse-Route-Reason`` (the router's reason, then the scheduler's).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from inhouse.config import Settings
from inhouse.engine.base import Priority, TokenUsage
from inhouse.engine.remote import UpstreamClient
from inhouse.errors import (
    EngineUnavailableError,
    InhouseError,
    InvalidRequestError,
    RateLimitError,
    UpstreamError,
    UpstreamRejectedError,
)
from inhouse.fleet.dispatch_queue import DispatchQueue, QueueTicket
from inhouse.fleet.health import FleetMonitor
from inhouse.fleet.nodes import NodeSpec, Tier
from inhouse.fleet.router import RequestProfile, RouteDecision, RoutingPolicy, route
from inhouse.fleet.scheduler import Placement, estimate_kv_bytes, schedule
from inhouse.flows.builtin_steps import DEFAULT_TASKS
from inhouse.gateway import remote_calls
from inhouse.gateway.local_calls import OnFinish
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest, TextPart
from inhouse.gateway.replies import JsonReply, Reply, StreamReply
from inhouse.monitor.metrics import GatewayMetrics, NodeGauge
from inhouse.registry.models import ModelEntry, ModelKind
from inhouse.tenancy.models import Principal

_RECHECK_SECONDS = 0.25
"""A queued request looks again this often even unwoken: loads change with each poll."""


def _keyword(word: str) -> re.Pattern[str]:
    """Latin keywords as whole words ('code', not 'postcode'); others anywhere."""
    escaped = re.escape(word.casefold())
    return re.compile(rf"\b{escaped}\b" if word.isascii() else escaped)


_TASK_WORDS = {task: tuple(_keyword(w) for w in words) for task, words in DEFAULT_TASKS.items()}


@dataclass(frozen=True, slots=True)
class RouteHints:
    """What the caller or a flow says about a request's routing."""

    tier: Tier | None = None
    tasks: frozenset[str] = frozenset()
    language: str | None = None
    policy: Mapping[str, Any] = field(default_factory=dict)
    """A flow's overrides of the tenant's routing policy."""
    priority: Priority | None = None
    """``X-Inhouse-Priority``: a caller may lower its tenant's priority, never raise it."""


def parse_tier_hint(value: str | None) -> Tier | None:
    """The ``X-Inhouse-Tier`` header: ``edge`` or ``center``, or absent."""
    if value is None:
        return None
    try:
        return Tier(value.strip().lower())
    except ValueError:
        raise InvalidRequestError(
            "X-Inhouse-Tier: use edge or center", param="X-Inhouse-Tier"
        ) from None


def parse_priority_hint(value: str | None) -> Priority | None:
    """The ``X-Inhouse-Priority`` header: ``high``, ``normal`` or ``low``, or absent."""
    if value is None:
        return None
    try:
        return Priority[value.strip().upper()]
    except KeyError:
        raise InvalidRequestError(
            "X-Inhouse-Priority: use high, normal or low", param="X-Inhouse-Priority"
        ) from None


def estimate_tokens(text: str) -> int:
    """About four ASCII characters a token, one token for any other character (CJK)."""
    ascii_chars = sum(1 for char in text if char.isascii())
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


def _texts(request: ChatCompletionRequest | CompletionRequest) -> list[str]:
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        return [prompt] if isinstance(prompt, str) else [str(prompt)]
    texts = []
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            texts.append(content)
        elif content is not None:
            texts.extend(part.text or "" for part in content if isinstance(part, TextPart))
    return texts


def profile_of(
    request: ChatCompletionRequest | CompletionRequest, *, priority: Priority, hints: RouteHints
) -> RequestProfile:
    """What the router decides by. A request that sets no ``max_tokens`` says nothing
    about its length (most clients send none): it counts as 0 for routing."""
    texts = _texts(request)
    last = texts[-1].casefold() if texts else ""
    found = {task for task, words in _TASK_WORDS.items() if any(w.search(last) for w in words)}
    turns = len(request.messages) if isinstance(request, ChatCompletionRequest) else 1
    return RequestProfile(
        model=request.model,
        prompt_tokens=sum(estimate_tokens(text) for text in texts),
        turns=turns,
        max_tokens=request.token_limit or 0,
        tasks=frozenset(found) | hints.tasks,
        language=hints.language,
        tier_hint=hints.tier,
        priority=priority,
    )


class _Dispatcher:
    """Per model, the requests waiting for a node with room, in priority order."""

    def __init__(self, monitor: FleetMonitor, settings: Settings, clock: Callable[[], float]):
        self._monitor = monitor
        self._settings = settings.fleet
        self._clock = clock
        self._queues: dict[str, DispatchQueue[asyncio.Event]] = {}

    async def place(
        self,
        *,
        model: str,
        tier: Tier,
        priority: Priority,
        tenant_id: str,
        needed_bytes: int,
        exclude: frozenset[str],
    ) -> Placement:
        """A node for the request, its ``begin`` already counted; waits while all are full.

        A request tries at once; refused as full, it waits in the model's queue and tries
        again whenever a node of that model frees a slot (waiters are woken in priority
        order, so a high-priority request gets the first go) or every quarter second.
        Waiting requests never block one that another node (its tenant's own, one with
        more memory) can take now.
        """
        queue = self._queues.setdefault(model, DispatchQueue(self._settings.max_queued_requests))
        deadline = self._clock() + self._settings.queue_timeout_seconds
        ticket: QueueTicket | None = None
        wake = asyncio.Event()
        try:
            while True:
                decision = schedule(
                    self._monitor.snapshots(),
                    model=model,
                    tier=tier,
                    priority=priority,
                    tenant_id=tenant_id,
                    needed_bytes=needed_bytes,
                    exclude=exclude,
                )
                if isinstance(decision, Placement):
                    self._monitor.begin(decision.node_id)
                    return decision
                if not decision.retryable:
                    raise EngineUnavailableError(
                        f"no node can serve the model '{model}' now ({decision.reason})"
                    )
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise RateLimitError(
                        f"every node serving '{model}' stayed busy for "
                        f"{self._settings.queue_timeout_seconds:g} s",
                        retry_after_seconds=self._settings.queue_timeout_seconds,
                        code="fleet_busy",
                    )
                if ticket is None:
                    ticket = queue.push(wake, priority, now=self._clock())
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(remaining, _RECHECK_SECONDS))
        finally:
            if ticket is not None:
                queue.remove(ticket)

    def released(self, models: Iterable[str]) -> None:
        """A node serving ``models`` has a free slot: their waiters try again, high first."""
        for model in models:
            queue = self._queues.get(model)
            if queue is not None:
                for waiter in queue.waiting():
                    waiter.item.set()


class _NodeUse:
    """One request on one node: ``begin`` was counted; ``done`` ends it exactly once."""

    def __init__(self, calls: FleetCalls, spec: NodeSpec) -> None:
        self._calls, self.spec = calls, spec
        self._done = False

    def done(self, *, ok: bool) -> None:
        if self._done:
            return
        self._done = True
        self._calls.monitor.end(self.spec.id, ok=ok)
        self._calls.dispatcher.released(self.spec.models)


class FleetCalls:
    """The gateway's path to fleet nodes; see the module docstring."""

    def __init__(
        self,
        monitor: FleetMonitor,
        session: Callable[[], aiohttp.ClientSession],
        settings: Settings,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor = monitor
        self.dispatcher = _Dispatcher(monitor, settings, clock)
        self._session = session
        self._settings = settings
        self._metrics = metrics
        self._policy = RoutingPolicy().merged(settings.fleet.routing)
        self._tenant_policies = {
            tenant: self._policy.merged(overrides)
            for tenant, overrides in settings.fleet.tenant_routing.items()
        }
        self._clients: dict[tuple[str, str, Priority], UpstreamClient] = {}
        self._created = datetime.now(UTC)
        metrics.watch_fleet(self._gauges)

    def _gauges(self) -> list[NodeGauge]:
        return [
            NodeGauge(s.spec.name, s.spec.tier.value, s.available, s.in_flight,
                      s.load.running, s.load.waiting)
            for s in self.monitor.snapshots()
        ]  # fmt: skip

    @property
    def created(self) -> datetime:
        return self._created

    def models(self, tenant_id: str) -> list[str]:
        """The model names registered nodes serve to the tenant, sorted."""
        return sorted(
            {
                name
                for s in self.monitor.snapshots()
                if s.spec.tenant_id in (None, tenant_id)
                for name in s.spec.models
            }
        )

    def serves(self, model: str, tenant_id: str) -> bool:
        """Whether a registered node (healthy or not) serves the model to the tenant."""
        return any(
            model in s.spec.models and s.spec.tenant_id in (None, tenant_id)
            for s in self.monitor.snapshots()
        )

    def entry(self, model: str, spec: NodeSpec | None = None) -> ModelEntry:
        """The model as usage records and admission see it (on ``spec`` once placed)."""
        return ModelEntry(
            id=f"node:{spec.id}"[:64] if spec is not None else "fleet",
            name=model,
            kind=ModelKind.REMOTE,
            created_at=self._created,
            url=spec.url if spec is not None else None,
            upstream_model=spec.models[model] if spec is not None else None,
        )

    def policy_for(self, tenant_name: str, hints: RouteHints) -> RoutingPolicy:
        """The defaults, then a flow's overrides, then the operator's for the tenant: a
        tenant's own flow cannot undo what the operator set for that tenant."""
        if not hints.policy:
            return self._tenant_policies.get(tenant_name, self._policy)
        tenant = self._settings.fleet.tenant_routing.get(tenant_name, {})
        return self._policy.merged(hints.policy).merged(tenant)

    async def answer(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        *,
        principal: Principal,
        priority: Priority,
        hints: RouteHints,
        request_id: str,
        on_placed: Callable[[ModelEntry], None],
        on_finish: OnFinish,
    ) -> Reply:
        model = request.model
        profile = profile_of(request, priority=priority, hints=hints)
        decision = route(profile, self.policy_for(principal.tenant_name, hints))
        # Memory for the worst case: without max_tokens, the gateway's default for remotes.
        most = request.token_limit or self._settings.gateway.default_max_tokens
        needed = estimate_kv_bytes(profile.prompt_tokens, most)
        path = "/chat/completions" if isinstance(request, ChatCompletionRequest) else "/completions"
        tried: set[str] = set()
        failure: InhouseError | None = None
        for _ in range(self._settings.fleet.max_attempts):
            try:
                placement = await self.dispatcher.place(
                    model=model,
                    tier=decision.tier,
                    priority=priority,
                    tenant_id=principal.tenant_id,
                    needed_bytes=needed,
                    exclude=frozenset(tried),
                )
            except EngineUnavailableError:
                if failure is not None:
                    break  # every node that could serve it has failed this request
                raise
            use = _NodeUse(self, self.monitor.spec(placement.node_id))
            entry = self.entry(model, use.spec)
            on_placed(entry)
            headers = _headers(use.spec, decision, placement)
            try:
                reply = await self._send(
                    use, request, entry, priority, path, request_id, headers, on_finish
                )
            except (UpstreamError, RateLimitError, UpstreamRejectedError) as exc:
                if isinstance(exc, UpstreamRejectedError) and exc.status_code != 404:
                    use.done(ok=True)  # the request itself was refused: relayed as it is
                    raise
                # The node failed, was full, or does not have the model it was registered
                # with (404): nothing reached the caller, so another node may answer.
                use.done(ok=isinstance(exc, RateLimitError))
                self._metrics.observe_fleet(
                    use.spec.name, use.spec.tier, _rule(decision), "retried"
                )
                tried.add(use.spec.id)
                failure = exc
                continue
            except BaseException:
                use.done(ok=True)  # refused as a request (4xx), or the caller left
                raise
            self._metrics.observe_fleet(use.spec.name, use.spec.tier, _rule(decision), "sent")
            return reply
        assert failure is not None
        if isinstance(failure, RateLimitError):
            raise failure  # every node tried was full: 429 with Retry-After
        raise UpstreamError(f"{len(tried)} nodes failed this request; the last: {failure.message}")

    async def _send(
        self,
        use: _NodeUse,
        request: ChatCompletionRequest | CompletionRequest,
        entry: ModelEntry,
        priority: Priority,
        path: str,
        request_id: str,
        headers: dict[str, str],
        on_finish: OnFinish,
    ) -> Reply:
        client = self._client(use.spec, entry, priority)
        body = remote_calls.upstream_body(request, entry)
        if request.stream:
            upstream_events = await client.open_stream(path, body)

            def finished(status: int, usage: TokenUsage | None) -> None:
                use.done(ok=status < 500)
                on_finish(status, usage or TokenUsage())

            events = remote_calls.relay_stream(
                upstream_events,
                model=request.model,
                include_usage=request.include_usage_in_stream,
                on_finish=finished,
            )
            return StreamReply(events, request_id, lambda: use.done(ok=True), headers=headers)
        payload, usage = await remote_calls.relay_json(client, path, body, request.model)
        use.done(ok=True)
        on_finish(200, usage)
        return JsonReply(payload, request_id, headers=headers)

    def _client(self, spec: NodeSpec, entry: ModelEntry, priority: Priority) -> UpstreamClient:
        key = (spec.id, entry.name, priority)
        client = self._clients.get(key)
        if client is None:
            client = UpstreamClient(
                self._session(),
                spec.url,
                upstream_model=entry.upstream_model,
                api_key=self.monitor.token(spec.id),
                # inhouse nodes order their queue by it; other servers ignore the header
                headers={"X-Inhouse-Priority": priority.name.lower()},
            )
            self._clients[key] = client
        return client


def _rule(decision: RouteDecision) -> str:
    """The rule alone (``prompt_tokens``, not ``prompt_tokens=2400>1500``): few label values."""
    return decision.reason.split("=", 1)[0]


def _headers(spec: NodeSpec, decision: RouteDecision, placement: Placement) -> dict[str, str]:
    return {
        "X-Inhouse-Node": spec.name,
        "X-Inhouse-Tier": placement.tier.value,
        "X-Inhouse-Route-Reason": f"{decision.reason}; {placement.reason}",
    }
