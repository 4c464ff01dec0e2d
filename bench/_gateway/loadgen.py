"""Closed-loop load generator of the gateway benchmark, run as its own process per cell.

``concurrency`` workers share one aiohttp keep-alive pool (limit = concurrency) and each loops
chat-completion requests until the cell's time is up: first a warm-up (discarded), then the
measured window. Latency is per request; for streaming it is the time until ``data: [DONE]``.
Errors are non-200 answers, malformed bodies and transport failures.

Prints one JSON object on stdout::

    python bench/_gateway/loadgen.py --url http://127.0.0.1:8000/v1 --key K --model fake \
        --concurrency 16 --seconds 5 --warmup 1 [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MAX_REQUESTS_PER_WORKER = 10_000_000
REQUEST_TIMEOUT_S = 30.0
ERROR_BACKOFF_S = 0.01


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3 and what not in self.error_samples:
            self.error_samples.append(what)


@dataclass(frozen=True)
class Request:
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool


def build_request(base_url: str, key: str, model: str, stream: bool) -> Request:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": stream,
    }
    if stream:
        payload["stream_options"] = {"include_usage": True}
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    url = base_url.rstrip("/") + "/chat/completions"
    return Request(url, headers, json.dumps(payload).encode(), stream)


async def _check_json(resp: aiohttp.ClientResponse) -> str | None:
    data = await resp.read()
    try:
        obj = json.loads(data)
    except ValueError:
        return f"malformed JSON: {data[:120]!r}"
    if not isinstance(obj, dict) or not obj.get("choices"):
        return f"no choices: {data[:120]!r}"
    return None


async def _check_stream(resp: aiohttp.ClientResponse, t0: float) -> tuple[str | None, float]:
    """Read the SSE stream to its end; returns (error, seconds until ``[DONE]``)."""
    chunks = 0
    done_at = 0.0
    async for line in resp.content:
        if line.startswith(b"data: [DONE]"):
            done_at = time.perf_counter() - t0
        elif line.startswith(b"data:") and b"chat.completion.chunk" in line:
            chunks += 1
    if not done_at:
        return "stream ended without [DONE]", 0.0
    if not chunks:
        return "stream had no chat.completion.chunk", 0.0
    return None, done_at


async def one_request(session: aiohttp.ClientSession, req: Request, stats: Stats) -> None:
    t0 = time.perf_counter()
    try:
        async with session.post(req.url, data=req.body, headers=req.headers) as resp:
            if resp.status != 200:
                text = (await resp.read())[:160]
                stats.error(f"HTTP {resp.status}: {text!r}")
                return
            if req.stream:
                err, latency = await _check_stream(resp, t0)
            else:
                err, latency = await _check_json(resp), time.perf_counter() - t0
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.error(f"{type(exc).__name__}: {exc}"[:200])
        return
    if err:
        stats.error(err)
    else:
        stats.latencies.append(latency)


async def worker(
    session: aiohttp.ClientSession, req: Request, deadline: float, stats: Stats
) -> None:
    for _ in range(MAX_REQUESTS_PER_WORKER):
        if time.perf_counter() >= deadline:
            return
        before = stats.errors
        await one_request(session, req, stats)
        if stats.errors != before:
            await asyncio.sleep(ERROR_BACKOFF_S)  # do not spin on a dead target


async def phase(
    session: aiohttp.ClientSession, req: Request, conc: int, secs: float
) -> tuple[Stats, float]:
    stats = Stats()
    start = time.perf_counter()
    deadline = start + secs
    await asyncio.gather(*(worker(session, req, deadline, stats) for _ in range(conc)))
    return stats, time.perf_counter() - start


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[idx]


def summarize(stats: Stats, elapsed: float) -> dict[str, Any]:
    lat = sorted(stats.latencies)
    ok = len(lat)
    return {
        "requests": ok,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "elapsed_s": round(elapsed, 3),
        "rps": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(lat, 0.50) * 1000, 3) if ok else None,
        "p90_ms": round(percentile(lat, 0.90) * 1000, 3) if ok else None,
        "p99_ms": round(percentile(lat, 0.99) * 1000, 3) if ok else None,
        "mean_ms": round(sum(lat) / ok * 1000, 3) if ok else None,
        "max_ms": round(lat[-1] * 1000, 3) if ok else None,
    }


async def run_cell(args: argparse.Namespace) -> dict[str, Any]:
    req = build_request(args.url, args.key, args.model, args.stream)
    connector = aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.warmup > 0:
            await phase(session, req, args.concurrency, args.warmup)
        stats, elapsed = await phase(session, req, args.concurrency, args.seconds)
    return summarize(stats, elapsed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="closed-loop chat-completions load generator")
    parser.add_argument("--url", required=True, help="base URL ending in /v1")
    parser.add_argument("--key", default="")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--stream", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run_cell(args))
    else:
        result = uvloop.run(run_cell(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
