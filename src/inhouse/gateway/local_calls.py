"""OpenAI requests answered by an in-process engine: request mapping and response shapes."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable

from inhouse.engine.base import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    PreparedGeneration,
    Priority,
    SamplingParams,
    TextGenerator,
    TokenUsage,
    collect,
)
from inhouse.errors import InhouseError, InvalidRequestError
from inhouse.gateway import sse
from inhouse.gateway.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageIn,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Usage,
)
from inhouse.gateway.replies import JsonReply, Reply, StreamReply

OnFinish = Callable[[int, TokenUsage], None]
"""Called once when a stream ends: HTTP-like status (200, 499 gone) and usage."""


def sampling_params(request: ChatCompletionRequest | CompletionRequest) -> SamplingParams:
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


def chat_generation(request: ChatCompletionRequest, request_id: str) -> GenerationRequest:
    messages = tuple(
        ChatMessage(role="system" if m.role == "developer" else m.role, content=_message_text(m, i))
        for i, m in enumerate(request.messages)
    )
    return GenerationRequest(request_id, sampling_params(request), messages=messages)


def completion_generation(request: CompletionRequest, request_id: str) -> GenerationRequest:
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequestError("local models accept a single prompt", param="prompt")
        prompt = prompt[0]
    return GenerationRequest(request_id, sampling_params(request), prompt=prompt)


def _usage(usage: TokenUsage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _finish_reason(reason: FinishReason) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"


def chat_body(request_id: str, model: str, result: GenerationResult) -> bytes:
    completion = ChatCompletion(
        id=request_id,
        created=int(time.time()),
        model=model,
        choices=[
            ChatChoice(
                message=ChatMessageOut(content=result.text),
                finish_reason=_finish_reason(result.finish_reason),
            )
        ],
        usage=_usage(result.usage),
    )
    return completion.model_dump_json().encode()


def completion_body(request_id: str, model: str, result: GenerationResult) -> bytes:
    completion = Completion(
        id=request_id,
        created=int(time.time()),
        model=model,
        choices=[
            CompletionChoice(text=result.text, finish_reason=_finish_reason(result.finish_reason))
        ],
        usage=_usage(result.usage),
    )
    return completion.model_dump_json().encode()


async def stream_events(
    prepared: PreparedGeneration,
    *,
    request_id: str,
    model: str,
    chat: bool,
    include_usage: bool,
    on_finish: OnFinish,
) -> AsyncGenerator[bytes, None]:
    created = int(time.time())
    base = {
        "id": request_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
    }

    def choice(text: str | None, finish: str | None, *, role: bool = False) -> bytes:
        if chat:
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            item = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            item = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return sse.event({**base, "choices": [item]})

    usage = TokenUsage(prompt_tokens=prepared.prompt_tokens)
    status = 499
    try:
        if chat:
            yield choice("", None, role=True)
        async for chunk in prepared.stream():
            usage = chunk.usage or usage  # so far: a client that leaves pays for what it got
            if chunk.text:
                yield choice(chunk.text, None)
            if chunk.finish_reason is not None:
                yield choice(None, _finish_reason(chunk.finish_reason))
        if include_usage:
            yield sse.event({**base, "choices": [], "usage": _usage(usage).model_dump()})
        yield sse.DONE
        status = 200
    except InhouseError as exc:
        status = exc.status_code
        yield sse.error_event(exc.message, exc.error_type, exc.code)
    finally:
        on_finish(status, usage)


async def answer(
    engine: TextGenerator,
    request: ChatCompletionRequest | CompletionRequest,
    request_id: str,
    model: str,
    on_finish: OnFinish,
    priority: Priority = Priority.NORMAL,
) -> Reply:
    """Admit the request to the engine (errors raise here), then answer or stream."""
    chat = isinstance(request, ChatCompletionRequest)
    generation = (
        chat_generation(request, request_id)
        if isinstance(request, ChatCompletionRequest)
        else completion_generation(request, request_id)
    )
    prepared = await engine.prepare(generation, priority)
    if request.stream:
        events = stream_events(
            prepared,
            request_id=request_id,
            model=model,
            chat=chat,
            include_usage=request.include_usage_in_stream,
            on_finish=on_finish,
        )
        return StreamReply(events, request_id)
    result = await collect(prepared)
    on_finish(200, result.usage)
    build = chat_body if chat else completion_body
    return JsonReply(build(request_id, model, result), request_id)
