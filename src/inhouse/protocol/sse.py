"""Server-sent events framing of OpenAI streams: the one encoder of every stream."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from inhouse.errors import InhouseError
from inhouse.protocol.replies import Chunk, StreamReply
from inhouse.protocol.types import TokenUsage

DONE = b"data: [DONE]\n\n"
CLIENT_GONE = 499
"""The status of a stream whose client left before its end (nginx's convention)."""


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, error_type: str, code: str | None) -> bytes:
    return event({"error": {"message": message, "type": error_type, "param": None, "code": code}})


@dataclass(slots=True)
class StreamTally:
    """How a stream ended and what it used: read by its owner once the events end."""

    status: int = CLIENT_GONE
    usage: TokenUsage = field(default_factory=TokenUsage)


PROGRESS_TOKENS = 32
PROGRESS_SECONDS = 0.25
"""A stream's usage so far is reported this often (whichever comes first)."""

Progress = Callable[[TokenUsage], None]


async def encode(
    chunks: AsyncIterator[Chunk],
    *,
    include_usage: bool,
    tally: StreamTally,
    progress: Progress | None = None,
) -> AsyncGenerator[bytes, None]:
    """The chunks as events, then ``[DONE]``; an engine error midway ends the stream with
    an error event. Usage reports (a ``usage`` field) reach the client only when it asked
    for them (``stream_options.include_usage``); a usage-only chunk is then dropped.
    ``progress`` gets the usage so far every ``PROGRESS_TOKENS`` completion tokens or
    ``PROGRESS_SECONDS``, so that a process killed midway has journalled what it sent."""
    reported_tokens, reported_at = 0, time.monotonic()
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                tally.usage = chunk.usage
                if progress is not None:
                    tokens, now = chunk.usage.completion_tokens, time.monotonic()
                    due = now - reported_at >= PROGRESS_SECONDS
                    if tokens > reported_tokens and (
                        tokens - reported_tokens >= PROGRESS_TOKENS or due
                    ):
                        progress(chunk.usage)
                        reported_tokens, reported_at = tokens, now
            payload = chunk.payload
            if not include_usage and payload.get("usage") is not None:
                if not payload.get("choices"):
                    continue
                del payload["usage"]
            yield event(payload)
        yield DONE
        tally.status = 200
    except InhouseError as exc:
        tally.status = exc.status_code
        yield error_event(exc.message, exc.error_type, exc.code)


def stream_reply(
    chunks: AsyncGenerator[Chunk, None],
    release: Callable[[], None],
    *,
    request_id: str,
    include_usage: bool,
    on_end: Callable[[StreamTally], None],
    headers: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> StreamReply:
    """A stream of ``chunks`` as a reply. When it ends, however it ends (finished, broken,
    closed, or its client gone before the first event, when ``chunks`` never started),
    ``release`` frees the generation and ``on_end`` gets the tally, once."""
    tally = StreamTally()
    ended = False

    def end() -> None:
        nonlocal ended
        release()
        if not ended:
            ended = True
            on_end(tally)

    async def events() -> AsyncGenerator[bytes, None]:
        encoded = encode(chunks, include_usage=include_usage, tally=tally, progress=progress)
        try:
            async for item in encoded:
                yield item
        finally:
            await encoded.aclose()
            await chunks.aclose()
            end()

    return StreamReply(events(), request_id, end, headers=headers or {})
