"""The in-process engine behind the engine-client interface: OpenAI requests mapped to
the engine's typed requests, its text and usage mapped back to OpenAI bodies and chunks.

The gateway's local models and ``inhouse node`` both answer through this client.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from inhouse.engine.base import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    PreparedGeneration,
    SamplingParams,
    TextGenerator,
    collect,
)
from inhouse.engine.client import Answer, AnswerStream, EngineRequest, GenerationCall, Origin
from inhouse.errors import InvalidRequestError
from inhouse.protocol.openai import ChatCompletionRequest, ChatMessageIn
from inhouse.protocol.replies import Chunk, JsonObject
from inhouse.protocol.types import TokenUsage


def sampling_params(request: GenerationCall) -> SamplingParams:
    if request.n != 1:
        raise InvalidRequestError("local models answer with n=1 only", param="n")
    return SamplingParams(
        max_tokens=request.token_limit,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        seed=request.seed,
        stop=request.stop_sequences,
    )


def _message_text(message: ChatMessageIn, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts: list[str] = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise InvalidRequestError(
                f"local models accept text content parts only, not {part.type!r}",
                param=f"messages.{index}.content",
            )
        texts.append(part.text)
    return "".join(texts)


def generation_request(request: EngineRequest) -> GenerationRequest:
    """The engine's typed request for an OpenAI chat or completion request."""
    body, share = request.body, request.caller.share
    params = sampling_params(body)
    if isinstance(body, ChatCompletionRequest):
        messages = tuple(
            ChatMessage(
                role="system" if m.role == "developer" else m.role, content=_message_text(m, i)
            )
            for i, m in enumerate(body.messages)
        )
        return GenerationRequest(request.request_id, params, messages=messages, share=share)
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequestError("local models accept a single prompt", param="prompt")
        prompt = prompt[0]
    return GenerationRequest(request.request_id, params, prompt=prompt, share=share)


def usage_object(usage: TokenUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish_reason(reason: FinishReason) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"


def answer_body(request_id: str, model: str, result: GenerationResult, *, chat: bool) -> JsonObject:
    """An OpenAI ``chat.completion`` or ``text_completion`` with one choice."""
    finish = _finish_reason(result.finish_reason)
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": result.text}
    else:
        choice["text"] = result.text
    choice |= {"finish_reason": finish, "logprobs": None}
    return {
        "id": request_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage_object(result.usage),
    }


async def _chunks(
    prepared: PreparedGeneration, request_id: str, model: str, *, chat: bool
) -> AsyncGenerator[Chunk, None]:
    """The generation as OpenAI chunks (a role chunk first for chat), then a usage-only
    chunk; every chunk carries the usage so far."""
    base = {
        "id": request_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
    }

    def payload(text: str | None, finish: str | None, *, role: bool = False) -> JsonObject:
        if chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            item = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            item = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return {**base, "choices": [item]}

    usage = TokenUsage(prompt_tokens=prepared.prompt_tokens)
    try:
        if chat:
            yield Chunk(payload("", None, role=True), usage)
        async for piece in prepared.stream():
            usage = piece.usage or usage
            if piece.text:
                yield Chunk(payload(piece.text, None), usage)
            if piece.finish_reason is not None:
                yield Chunk(payload(None, _finish_reason(piece.finish_reason)), usage)
        yield Chunk({**base, "choices": [], "usage": usage_object(usage)}, usage)
    finally:
        prepared.cancel()


class LocalEngineClient:
    """One in-process engine (``TextGenerator``) behind the engine-client interface."""

    def __init__(self, engine: TextGenerator, origin: Origin) -> None:
        self.engine = engine
        self._origin = origin

    async def generate(self, request: EngineRequest) -> Answer | AnswerStream:
        """Admit the request to the engine (its refusals raise here), then answer or
        stream."""
        body = request.body
        chat = isinstance(body, ChatCompletionRequest)
        prepared = await self.engine.prepare(generation_request(request), request.priority)
        if body.stream:
            chunks = _chunks(prepared, request.request_id, body.model, chat=chat)
            return AnswerStream(chunks, prepared.cancel, self._origin)
        try:
            result = await collect(prepared)
        finally:
            prepared.cancel()
        return Answer(
            answer_body(request.request_id, body.model, result, chat=chat),
            result.usage,
            self._origin,
        )
