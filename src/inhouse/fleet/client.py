"""The fleet behind the engine-client interface: for models that fleet nodes serve,
route by complexity, schedule over the nodes, send, fail over.

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

import re
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime

import aiohttp

from inhouse.config import Settings
from inhouse.engine.base import Share
from inhouse.engine.client import (
    Answer,
    AnswerStream,
    EngineRequest,
    GenerationCall,
    Origin,
)
from inhouse.engine.remote import UpstreamClient
from inhouse.engine.upstream_client import UpstreamEngineClient
from inhouse.errors import (
    EngineUnavailableError,
    InhouseError,
    RateLimitError,
    UpstreamError,
    UpstreamRejectedError,
)
from inhouse.fleet.dispatcher import Dispatcher
from inhouse.fleet.health import FleetMonitor
from inhouse.fleet.nodes import NodeSpec
from inhouse.fleet.router import (
    DEFAULT_TASKS,
    RequestProfile,
    RouteDecision,
    RoutingPolicy,
    route,
)
from inhouse.fleet.scheduler import Placement, estimate_kv_bytes
from inhouse.monitor.metrics import GatewayMetrics, NodeGauge
from inhouse.protocol.hints import RouteHints
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest, TextPart
from inhouse.protocol.replies import Chunk
from inhouse.protocol.types import Priority
from inhouse.registry.models import host_label


def _keyword(word: str) -> re.Pattern[str]:
    """Latin keywords as whole words ('code', not 'postcode'); others anywhere."""
    escaped = re.escape(word.casefold())
    return re.compile(rf"\b{escaped}\b" if word.isascii() else escaped)


_TASK_WORDS = {task: tuple(_keyword(w) for w in words) for task, words in DEFAULT_TASKS.items()}


def estimate_tokens(text: str) -> int:
    """About four ASCII characters a token, one token for any other character (CJK)."""
    ascii_chars = sum(1 for char in text if char.isascii())
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


def _texts(request: GenerationCall) -> list[str]:
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


def profile_of(request: GenerationCall, *, priority: Priority, hints: RouteHints) -> RequestProfile:
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


class _NodeUse:
    """One request on one node: ``begin`` was counted; ``done`` ends it exactly once."""

    def __init__(self, fleet: FleetClient, spec: NodeSpec, model: str, share: Share) -> None:
        self._fleet, self.spec = fleet, spec
        self._model, self._share = model, share
        self._done = False

    def done(self, *, ok: bool) -> None:
        if self._done:
            return
        self._done = True
        self._fleet.monitor.end(self.spec.id, ok=ok)
        self._fleet.dispatcher.finished(self._model, self._share)
        self._fleet.dispatcher.released(self.spec.models)


class FleetClient:
    """The fleet as one engine client; see the module docstring."""

    def __init__(
        self,
        monitor: FleetMonitor,
        session: Callable[[], aiohttp.ClientSession],
        settings: Settings,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor = monitor
        self.dispatcher = Dispatcher(monitor, settings, clock)
        self._session = session
        self._settings = settings
        self._metrics = metrics
        self._policy = RoutingPolicy().merged(settings.fleet.routing)
        self._tenant_policies = {
            tenant: self._policy.merged(overrides)
            for tenant, overrides in settings.fleet.tenant_routing.items()
        }
        self._clients: dict[tuple[str, str, Priority, str | None], UpstreamClient] = {}
        self.created = datetime.now(UTC)
        metrics.watch_fleet(self._gauges)

    def _gauges(self) -> list[NodeGauge]:
        return [
            NodeGauge(s.spec.name, s.spec.tier.value, s.available, s.in_flight,
                      s.load.running, s.load.waiting)
            for s in self.monitor.snapshots()
        ]  # fmt: skip

    def models(self, tenant_id: str) -> list[str]:
        """The model names registered nodes serve to the tenant, sorted."""
        return sorted(
            {
                name
                for s in self.monitor.snapshots()
                if s.spec.approved and s.spec.tenant_id in (None, tenant_id)
                for name in s.spec.models
            }
        )

    def serves(self, model: str, tenant_id: str) -> bool:
        """Whether a registered node (healthy or not) serves the model to the tenant."""
        return any(
            model in s.spec.models and s.spec.approved and s.spec.tenant_id in (None, tenant_id)
            for s in self.monitor.snapshots()
        )

    def policy_for(self, tenant_name: str, hints: RouteHints) -> RoutingPolicy:
        """The defaults, then a flow's overrides, then the operator's for the tenant: a
        tenant's own flow cannot undo what the operator set for that tenant."""
        if not hints.policy:
            return self._tenant_policies.get(tenant_name, self._policy)
        tenant = self._settings.fleet.tenant_routing.get(tenant_name, {})
        return self._policy.merged(hints.policy).merged(tenant)

    async def generate(self, request: EngineRequest) -> Answer | AnswerStream:
        body, caller = request.body, request.caller
        model = body.model
        profile = profile_of(body, priority=request.priority, hints=request.hints)
        decision = route(profile, self.policy_for(caller.tenant_name, request.hints))
        # Memory for the worst case: without max_tokens, the gateway's default for remotes.
        most = body.token_limit or self._settings.gateway.default_max_tokens
        needed = estimate_kv_bytes(profile.prompt_tokens, most)
        tried: set[str] = set()
        failure: InhouseError | None = None
        for _ in range(self._settings.fleet.max_attempts):
            try:
                placement = await self.dispatcher.place(
                    model=model,
                    tier=decision.tier,
                    priority=request.priority,
                    tenant_id=caller.tenant_id,
                    needed_bytes=needed,
                    exclude=frozenset(tried),
                    share=caller.share,
                )
            except EngineUnavailableError:
                if failure is not None:
                    break  # every node that could serve it has failed this request
                raise
            use = _NodeUse(self, self.monitor.spec(placement.node_id), model, caller.share)
            try:
                answer = await self._send(use, request, decision, placement)
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
            return answer
        assert failure is not None
        if isinstance(failure, RateLimitError):
            raise failure  # every node tried was full: 429 with Retry-After
        raise UpstreamError(f"{len(tried)} nodes failed this request; the last: {failure.message}")

    async def _send(
        self,
        use: _NodeUse,
        request: EngineRequest,
        decision: RouteDecision,
        placement: Placement,
    ) -> Answer | AnswerStream:
        spec, model = use.spec, request.body.model
        origin = Origin(
            model_version=f"node:{spec.id}"[:64],
            node=host_label(spec.url),
            headers=_headers(spec, decision, placement),
        )
        client = self._client(spec, model, request.priority)
        node = UpstreamEngineClient(client, spec.models[model], origin)
        answer = await node.generate(request)
        if isinstance(answer, Answer):
            use.done(ok=True)
            return answer
        stream = answer

        def release() -> None:
            stream.release()
            use.done(ok=True)

        return AnswerStream(_watched(stream, use), release, origin)

    def _client(self, spec: NodeSpec, model: str, priority: Priority) -> UpstreamClient:
        token = self.monitor.token(spec.id)
        key = (spec.id, model, priority, token)  # a node's own token replaces the fleet's
        client = self._clients.get(key)
        if client is None:
            client = UpstreamClient(
                self._session(),
                spec.url,
                api_key=token,
                # inhouse nodes order their queue by it; other servers ignore the header
                headers={"X-Inhouse-Priority": priority.name.lower()},
            )
            self._clients[key] = client
        return client


async def _watched(stream: AnswerStream, use: _NodeUse) -> AsyncGenerator[Chunk, None]:
    """A node's stream; a node that breaks it midway counts against its breaker."""
    ok = True
    try:
        async for chunk in stream.chunks:
            yield chunk
    except InhouseError as exc:
        ok = exc.status_code < 500
        raise
    finally:
        await stream.chunks.aclose()
        use.done(ok=ok)


def _rule(decision: RouteDecision) -> str:
    """The rule alone (``prompt_tokens``, not ``prompt_tokens=2400>1500``): few label values."""
    return decision.reason.split("=", 1)[0]


def _headers(spec: NodeSpec, decision: RouteDecision, placement: Placement) -> dict[str, str]:
    return {
        "X-Inhouse-Node": spec.name,
        "X-Inhouse-Tier": placement.tier.value,
        "X-Inhouse-Route-Reason": f"{decision.reason}; {placement.reason}",
    }
