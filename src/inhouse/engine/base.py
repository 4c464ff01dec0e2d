"""The engine's typed requests and results, and the interface every text generator meets.

Engines know nothing of tenants: they receive messages or a prompt and sampling
parameters, and produce text with token counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from inhouse.protocol.types import Priority, TokenUsage


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class Share:
    """Whose share of the running slots a request counts against: an opaque group (the
    gateway names the tenant) and its weight. No group holds more than the engine's
    ``max_share`` of the slots while another group waits (``engine.fair_slots``)."""

    group: str = ""
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class GroupLoad:
    running: int = 0
    waiting: int = 0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Either chat ``messages`` (the model's chat template applies) or a raw ``prompt``."""

    request_id: str
    params: SamplingParams
    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    share: Share = field(default_factory=Share)


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A piece of streamed text; the last chunk has ``finish_reason`` and ``usage``."""

    text: str
    finish_reason: FinishReason | None = None
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    text: str
    finish_reason: FinishReason
    usage: TokenUsage = field(default_factory=TokenUsage)


class PreparedGeneration(Protocol):
    """A request that passed validation (context length, parameters) and may now run."""

    @property
    def prompt_tokens(self) -> int: ...

    def stream(self) -> AsyncIterator[GenerationChunk]: ...

    def cancel(self) -> None:
        """Give the request up: free what ``prepare`` took, whether or not ``stream`` ran
        (a stream ended or closed frees it by itself); calling it again does nothing."""
        ...


class TextGenerator(Protocol):
    """What the gateway needs from an in-process engine (the local engine or a fake)."""

    name: str

    @property
    def ready(self) -> bool: ...

    def start(self) -> None:
        """Begin loading; ``wait_ready`` waits for it."""
        ...

    async def wait_ready(self) -> None: ...

    async def prepare(
        self, request: GenerationRequest, priority: Priority = Priority.NORMAL
    ) -> PreparedGeneration:
        """Validate and admit; raise (4xx) before anything is generated."""
        ...

    def load_by_group(self) -> dict[str, GroupLoad]:
        """Running and waiting requests per fair-share group, now."""
        ...

    async def close(self) -> None: ...


async def collect(prepared: PreparedGeneration) -> GenerationResult:
    """Run a prepared generation to the end and return its whole text."""
    parts: list[str] = []
    finish = FinishReason.STOP
    usage = TokenUsage(prompt_tokens=prepared.prompt_tokens)
    async for chunk in prepared.stream():
        parts.append(chunk.text)
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    return GenerationResult(text="".join(parts), finish_reason=finish, usage=usage)
