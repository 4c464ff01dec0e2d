"""Streaming OpenAI chat-completions clients (aiohttp) for the engine benchmark and soak test.

Each client is a closed loop: it sends a request, reads the SSE stream to ``data: [DONE]``, then
sends its next one. Generated tokens are the final chunk's ``usage.completion_tokens`` (the
number of content chunks when a server sends no usage). TTFT is the time until the first chunk
whose delta has non-empty content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

BodyFor = Callable[[int, int], dict[str, Any] | None]
"""``(client, turn) -> body``, or None when that client is done."""


@dataclass(slots=True)
class Outcome:
    """One request: seconds to the end of the stream, to the first content, tokens, error."""

    latency_s: float
    ttft_s: float | None
    tokens: int
    error: str | None = None
    usage_reported: bool = True


@dataclass(slots=True)
class _Stream:
    first_content: float | None = None
    content_chunks: int = 0
    usage_tokens: int | None = None
    done: bool = False


def _read_event(line: bytes, state: _Stream, now: float) -> None:
    if not line.startswith(b"data:"):
        return
    data = line[5:].strip()
    if data == b"[DONE]":
        state.done = True
        return
    event = orjson.loads(data)
    usage = event.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        state.usage_tokens = usage["completion_tokens"]
    for choice in event.get("choices") or ():
        if (choice.get("delta") or {}).get("content"):
            state.content_chunks += 1
            if state.first_content is None:
                state.first_content = now


async def stream_chat(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    timeout_s: float,
) -> Outcome:
    """Send one streaming request and read it to the end (at most ``timeout_s``)."""
    t0 = time.perf_counter()
    state = _Stream()
    try:
        async with asyncio.timeout(timeout_s):
            async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
                if resp.status != 200:
                    text = (await resp.read())[:200]
                    return Outcome(
                        time.perf_counter() - t0, None, 0, f"HTTP {resp.status} {text!r}"
                    )
                async for line in resp.content:
                    _read_event(line.strip(), state, time.perf_counter())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, ValueError) as exc:
        return Outcome(time.perf_counter() - t0, None, 0, f"{type(exc).__name__}: {exc}"[:200])
    latency = time.perf_counter() - t0
    if not state.done:
        return Outcome(latency, None, state.content_chunks, "stream ended without [DONE]")
    ttft = state.first_content - t0 if state.first_content is not None else None
    if state.usage_tokens is not None:
        return Outcome(latency, ttft, state.usage_tokens)
    return Outcome(latency, ttft, state.content_chunks, usage_reported=False)


async def _client(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body_for: BodyFor,
    client: int,
    timeout_s: float,
    sink: list[Outcome],
) -> None:
    turn = 0
    while (body := body_for(client, turn)) is not None:
        outcome = await stream_chat(http, url, headers, body, timeout_s)
        sink.append(outcome)
        turn += 1
        if outcome.error is not None:
            await asyncio.sleep(0.05)  # do not spin on a server that refuses everything


async def run_clients(
    base_url: str,
    token: str | None,
    body_for: BodyFor,
    clients: int,
    timeout_s: float,
    sink: list[Outcome] | None = None,
) -> tuple[list[Outcome], float]:
    """Run ``clients`` closed loops until ``body_for`` says stop; returns outcomes, wall seconds.

    ``sink`` (appended to as requests finish) lets a caller watch progress while this runs.
    """
    url = base_url.rstrip("/") + "/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    outcomes = sink if sink is not None else []
    # One connection per request: llama-server closes kept-alive connections between streamed
    # answers, and reusing one then fails; a loopback connect costs nothing next to a generation.
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as http:
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_client(http, url, headers, body_for, i, timeout_s, outcomes) for i in range(clients))
        )
        wall = time.perf_counter() - t0
    return outcomes, wall
