"""A fake vLLM server (named as such: it stands for vLLM's OpenAI server in tests of the
fleet; there is no model and no GPU behind it). A real aiohttp server on loopback, in a
thread, answering what the gateway and the fleet monitor ask of vLLM:

- ``POST /v1/chat/completions`` and ``POST /v1/completions``, JSON or SSE stream (with
  ``stream_options.include_usage``), each answer taking ``delay_seconds``;
- ``GET /v1/models``;
- ``GET /metrics`` in vLLM's Prometheus text format, whose ``vllm:num_requests_running``,
  ``vllm:num_requests_waiting`` and ``vllm:kv_cache_usage_perc`` are the requests it is
  serving at that moment: up to ``capacity`` run at once, the others wait.

Switches, settable from the test at any time: ``fail_status`` (every route answers it),
``silent`` (every route accepts the request and answers nothing until switched back),
``token`` (like ``vllm serve --api-key``: ``/v1`` routes need ``Bearer <token>``,
``/metrics`` does not), ``legacy_metric_names`` (``vllm:gpu_cache_usage_perc``, as vLLM's
V0 engine named it) and ``engines`` (label sets ``engine="0"``, ``engine="1"`` … as a
data-parallel server reports them).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.integration.fake_upstream import Received
from tests.integration.server import free_port


@dataclass
class FakeVllm:
    models: tuple[str, ...] = ("Qwen/Qwen2.5-7B-Instruct",)
    reply_text: str = "Hello from the fake vLLM"
    capacity: int = 4
    """Requests that run at once; the ones beyond wait for a slot."""
    delay_seconds: float = 0.0
    """How long each answer takes once it runs."""
    token: str | None = None
    fail_status: int | None = None
    silent: bool = False
    legacy_metric_names: bool = False
    engines: int = 1
    serve_metrics: bool = True
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/v1"
        self.running = 0
        self.waiting = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None
        self._slots: asyncio.Semaphore | None = None

    def __enter__(self) -> FakeVllm:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake vLLM server did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self.silent = False
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._slots = asyncio.Semaphore(self.capacity)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _refusal(self, request: web.Request) -> web.Response | None:
        """What every route does first: go silent, fail, or check the token."""
        while self.silent:  # noqa: ASYNC110 (switched from the test's thread, not this loop)
            await asyncio.sleep(0.02)
        if self.fail_status is not None:
            error = {"object": "error", "message": "fake vLLM failing", "type": "InternalError",
                     "code": self.fail_status}  # fmt: skip
            return web.json_response(error, status=self.fail_status)
        authorization = request.headers.get("Authorization")
        if (
            self.token is not None
            and request.path.startswith("/v1/")
            and authorization != f"Bearer {self.token}"
        ):
            return web.json_response({"error": "Unauthorized"}, status=401)
        return None

    async def _models(self, request: web.Request) -> web.Response:
        refused = await self._refusal(request)
        if refused is not None:
            return refused
        cards = [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "vllm",
             "root": name, "parent": None, "max_model_len": 4096}
            for name in self.models
        ]  # fmt: skip
        return web.json_response({"object": "list", "data": cards})

    async def _metrics(self, request: web.Request) -> web.Response:
        refused = await self._refusal(request)
        if refused is not None:
            return refused
        if not self.serve_metrics:
            return web.Response(status=404, text="404: Not Found")
        return web.Response(
            text=self.metrics_text(), content_type="text/plain", charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )  # fmt: skip

    def metrics_text(self) -> str:
        """The current load, as vLLM writes it (one label set per engine)."""
        model = self.models[0]
        cache = "vllm:gpu_cache_usage_perc" if self.legacy_metric_names else (
            "vllm:kv_cache_usage_perc")  # fmt: skip
        per_engine = max(1, self.capacity // self.engines)
        lines: list[str] = []

        def gauge(name: str, help_text: str, values: list[float]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            for engine, value in enumerate(values):
                lines.append(f'{name}{{engine="{engine}",model_name="{model}"}} {value!r}')

        running = _split(self.running, self.engines)
        gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
              [float(n) for n in running])  # fmt: skip
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
              [float(n) for n in _split(self.waiting, self.engines)])  # fmt: skip
        gauge(cache, "KV-cache usage. 1 means 100 percent usage.",
              [min(1.0, n / per_engine) for n in running])  # fmt: skip
        for name, total in (
            ("vllm:prompt_tokens", self.prompt_tokens_total),
            ("vllm:generation_tokens", self.generation_tokens_total),
        ):
            lines.append(f"# HELP {name}_total Number of tokens processed.")
            lines.append(f"# TYPE {name}_total counter")
            lines.append(f'{name}_total{{engine="0",model_name="{model}"}} {float(total)!r}')
        return "\n".join(lines) + "\n"

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        refused = await self._refusal(request)
        if refused is not None:
            return refused
        body = orjson.loads(await request.read())
        self.received.append(Received(request.path, dict(request.headers), body))
        if body.get("model") not in self.models:
            message = f"The model `{body.get('model')}` does not exist."
            error = {"object": "error", "message": message, "type": "NotFoundError", "code": 404}
            return web.json_response(error, status=404)
        assert self._slots is not None
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            return await self._answer(request, body)
        finally:
            self.running -= 1
            self._slots.release()

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        chat = request.path.endswith("/chat/completions")
        words = self.reply_text.split(" ")[: max(1, int(body.get("max_tokens") or 1000))]
        usage = {"prompt_tokens": 11, "completion_tokens": len(words),
                 "total_tokens": 11 + len(words)}  # fmt: skip
        self.prompt_tokens_total += 11
        self.generation_tokens_total += len(words)
        base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-fake", "created": int(time.time()),
                "model": body["model"]}  # fmt: skip
        if not body.get("stream"):
            text = " ".join(words)
            if chat:
                message = {"role": "assistant", "content": text}
                choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop"}
            kind = "chat.completion" if chat else "text_completion"
            return web.json_response({**base, "object": kind, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        for index, word in enumerate(words):
            piece = word if index == 0 else " " + word
            last = index == len(words) - 1
            finish = "stop" if last else None
            if chat:
                delta = {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
            else:
                delta = {"index": 0, "text": piece, "finish_reason": finish}
            chunk = {**base, "object": kind, "choices": [delta]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            tail = {**base, "object": kind, "choices": [], "usage": usage}
            await response.write(b"data: " + orjson.dumps(tail) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


def _split(total: int, parts: int) -> list[int]:
    """``total`` over ``parts`` engines, the first ones taking the remainder."""
    share, extra = divmod(total, max(1, parts))
    return [share + (1 if index < extra else 0) for index in range(max(1, parts))]
