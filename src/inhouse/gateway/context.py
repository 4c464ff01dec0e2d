"""The typed state of one request on its way through the pipeline: each stage reads what
the ones before it left and adds its own part."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from inhouse.engine.client import GenerationCall, Origin
from inhouse.flows.runner import CompiledFlow, FlowRun
from inhouse.gateway.engines import Target
from inhouse.monitor.metrics import UNRESOLVED_MODEL
from inhouse.protocol.hints import RouteHints
from inhouse.protocol.types import Priority, TokenUsage
from inhouse.tenancy.admission import Ticket
from inhouse.tenancy.models import Principal


class Endpoint(StrEnum):
    CHAT = "chat.completions"
    COMPLETIONS = "completions"

    @property
    def id_prefix(self) -> str:
        """How OpenAI begins the ids of its answers."""
        return "chatcmpl" if self is Endpoint.CHAT else "cmpl"


@dataclass(slots=True)
class FlowState:
    """A request for ``flow:NAME``: the flow version, its run, and whether it counts."""

    flow: CompiledFlow
    counted: bool = True
    """False for a trial of an unpublished flow: no violation counts, block audits or
    flow metrics (the model calls are metered as usual)."""
    run: FlowRun | None = None
    prompt_allowance: int = 0
    """The prompt tokens admission reserved per model call."""
    finish_reason: str = "content_filter"
    answer_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RequestContext:
    # -- given ---------------------------------------------------------------------------
    principal: Principal
    request: GenerationCall
    endpoint: Endpoint
    request_id: str
    started: float
    hints: RouteHints
    trace: bool = False
    # -- resolve ---------------------------------------------------------------------------
    model: str = UNRESOLVED_MODEL
    """The name metrics and usage records carry: the model, or ``flow:NAME``."""
    target: Target | None = None
    flow: FlowState | None = None
    # -- admit -----------------------------------------------------------------------------
    admitted: bool = False
    ticket: Ticket | None = None
    priority: Priority = Priority.NORMAL
    completion_bound: int | None = None
    """The max_tokens a flow's model call carries when its spec sets none."""
    # -- generate and respond --------------------------------------------------------------
    origin: Origin | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    generations: int = 0
    """Answers the engine gave (a flow may ask more than once; a blocked one never)."""
    status: int = 500
    streaming: bool = False
    """A stream reply went out: the stream records the request when it ends."""
    recorded: bool = False

    def add_usage(self, usage: TokenUsage) -> None:
        self.usage = TokenUsage(
            self.usage.prompt_tokens + usage.prompt_tokens,
            self.usage.completion_tokens + usage.completion_tokens,
        )
