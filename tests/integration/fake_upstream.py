"""A fake OpenAI-compatible upstream (named as such: it stands for vLLM, llama.cpp or an
inhouse node in tests of the relay). A real aiohttp server on loopback, in a thread;
it records what it received and can be told to fail."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.integration.server import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    reply_text: str = "Hello from upstream"
    fail_status: int | None = None
    break_stream: bool = False
    delay_seconds: float = 0.0
    """How long each answer takes, so that requests overlap."""
    full_completions: bool = False
    """Answer with exactly max_tokens completion tokens, as a model that never stops early."""
    word_seconds: float = 0.0
    """How long each streamed word takes, for streams that are cut midway."""
    redirect_to: str | None = None
    """Answer every request with a redirect there (307 keeps the method and the body)."""
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)  # answered in its own shape
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.received.append(Received(request.path, dict(request.headers), body))
        if self.redirect_to is not None:
            return web.Response(status=307, headers={"Location": self.redirect_to})
        if self.fail_status is not None:
            error = {"message": "upstream says no", "type": "invalid_request_error", "code": "nope"}
            return web.json_response({"error": error}, status=self.fail_status)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        limit = body.get("max_tokens") or 4
        completion = limit if self.full_completions else min(4, limit)
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": completion,
            "total_tokens": 11 + completion,
        }
        base = {"id": "up-1", "created": int(time.time()), "model": body["model"]}
        chat = request.path.endswith("/chat/completions")
        if not body.get("stream"):
            if chat:
                message = {"role": "assistant", "content": self.reply_text}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": self.reply_text, "finish_reason": "stop"}
            kind = "chat.completion" if chat else "text_completion"
            return web.json_response({**base, "object": kind, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        for word in self.reply_text.split(" "):
            if chat:
                delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
            else:
                delta = {"index": 0, "text": word + " ", "finish_reason": None}
            chunk = {**base, "object": kind, "choices": [delta]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if self.word_seconds:
                await asyncio.sleep(self.word_seconds)
            if self.break_stream:
                request.transport.close()  # type: ignore[union-attr]
                return response
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {**base, "object": kind, "choices": [], "usage": usage}
            await response.write(b"data: " + orjson.dumps(last) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response
