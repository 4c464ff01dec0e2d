"""A remote OpenAI-compatible engine behind the engine-client interface: the request
relayed with the upstream's model name, usage captured from what it answers.

Bodies pass through as JSON objects (only ``model`` is replaced), so what the gateway
does not interpret (tools, response formats, logprobs) still reaches the upstream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from inhouse.engine.client import (
    Answer,
    AnswerStream,
    EngineRequest,
    GenerationCall,
    Origin,
)
from inhouse.engine.remote import UpstreamClient, UpstreamStream
from inhouse.protocol.openai import ChatCompletionRequest, to_json_object
from inhouse.protocol.replies import Chunk, JsonObject
from inhouse.protocol.types import TokenUsage

_MAX_TOKENS_REPORTED = 2**31 - 1  # what a usage row holds


def upstream_body(request: GenerationCall, upstream_model: str) -> JsonObject:
    body = to_json_object(request)
    body["model"] = upstream_model
    if request.stream:
        # Ask for usage so that metering is exact; dropped again unless the caller asked.
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def usage_of(payload: JsonObject) -> TokenUsage | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    return TokenUsage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
    )


def _int(value: Any) -> int:
    """A token count as an upstream reports it: a non-negative int, clamped to fit."""
    return min(value, _MAX_TOKENS_REPORTED) if isinstance(value, int) and value >= 0 else 0


async def _relayed(stream: UpstreamStream, model: str) -> AsyncGenerator[Chunk, None]:
    """The upstream's chunks under our model name. Until the upstream reports usage,
    each content chunk counts as one completion token."""
    reported: TokenUsage | None = None
    content_chunks = 0
    payloads = stream.payloads()
    try:
        async for payload in payloads:
            seen = usage_of(payload)
            if seen is not None:
                reported = seen
            elif payload.get("choices"):
                content_chunks += 1
            payload["model"] = model
            yield Chunk(payload, reported or TokenUsage(completion_tokens=content_chunks))
    finally:
        await payloads.aclose()
        stream.release()


class UpstreamEngineClient:
    """One remote model: an OpenAI-compatible base URL (vLLM, llama.cpp, Ollama, ...)."""

    def __init__(self, client: UpstreamClient, upstream_model: str, origin: Origin) -> None:
        self.client = client
        self._upstream_model = upstream_model
        self._origin = origin

    async def generate(self, request: EngineRequest) -> Answer | AnswerStream:
        body = request.body
        path = "/chat/completions" if isinstance(body, ChatCompletionRequest) else "/completions"
        sent = upstream_body(body, self._upstream_model)
        if body.stream:
            stream = await self.client.open_stream(path, sent)
            return AnswerStream(_relayed(stream, body.model), stream.release, self._origin)
        payload = await self.client.post_json(path, sent)
        payload["model"] = body.model
        return Answer(payload, usage_of(payload) or TokenUsage(), self._origin)
