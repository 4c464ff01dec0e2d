"""OpenAI requests relayed to a remote OpenAI-compatible engine, with usage captured."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from inhouse.engine.base import TokenUsage
from inhouse.engine.remote import JsonObject, UpstreamClient
from inhouse.errors import InhouseError
from inhouse.gateway import sse
from inhouse.gateway.local_calls import OnFinish
from inhouse.gateway.protocol import ChatCompletionRequest, CompletionRequest, to_json_object
from inhouse.registry.models import ModelEntry


def upstream_body(
    request: ChatCompletionRequest | CompletionRequest, entry: ModelEntry
) -> JsonObject:
    body = to_json_object(request)
    body["model"] = entry.upstream_model or entry.name
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


_MAX_TOKENS_REPORTED = 2**31 - 1  # what a usage row holds


def _int(value: Any) -> int:
    """A token count as an upstream reports it: a non-negative int, clamped to fit."""
    return min(value, _MAX_TOKENS_REPORTED) if isinstance(value, int) and value >= 0 else 0


async def relay_json(
    client: UpstreamClient, path: str, body: JsonObject, model: str
) -> tuple[bytes, TokenUsage]:
    payload = await client.post_json(path, body)
    payload["model"] = model
    return orjson.dumps(payload), usage_of(payload) or TokenUsage()


async def relay_stream(
    events: AsyncIterator[JsonObject | None],
    *,
    model: str,
    include_usage: bool,
    on_finish: OnFinish,
) -> AsyncGenerator[bytes, None]:
    usage: TokenUsage | None = None
    content_chunks = 0
    status = 499
    try:
        async for payload in events:
            if payload is None:
                break
            seen = usage_of(payload)
            if seen is not None:
                usage = seen
                if not include_usage:
                    if not payload.get("choices"):
                        continue
                    del payload["usage"]
            elif payload.get("choices"):
                content_chunks += 1
            payload["model"] = model
            yield sse.event(payload)
        yield sse.DONE
        status = 200
    except InhouseError as exc:
        status = exc.status_code
        yield sse.error_event(exc.message, exc.error_type, exc.code)
    finally:
        on_finish(status, usage or TokenUsage(completion_tokens=content_chunks))
