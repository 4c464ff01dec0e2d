"""A very fast fake OpenAI upstream for the gateway benchmark.

A bare asyncio Protocol speaking HTTP/1.1 with keep-alive (uvloop when available), so that it
is never the bottleneck of a measurement. It serves canned answers:

- ``POST /v1/chat/completions``: a small ``chat.completion`` with ``usage``; with
  ``"stream": true`` an SSE stream of ``chat.completion.chunk`` events, a final usage chunk when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``.
- ``GET /v1/models``: one model, ``fake-model``.
- ``GET /health``: ``ok``.

Run on its own: ``python bench/_gateway/upstream.py --port 0``; it prints ``PORT <n>`` on stdout
once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any, cast

MODEL = "fake-model"
CREATED = 1_700_000_000
MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the fake upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        "system_fingerprint": None,
    }


def _chunk(delta: dict[str, Any], finish: str | None, with_usage_field: bool) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def _sse_events(include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed answer, each ``data: ...\\n\\n``."""
    chunks = [_chunk({"role": "assistant", "content": ""}, None, include_usage)]
    chunks += [
        _chunk({"content": piece}, None, include_usage) for piece in ("Hello", " from", " fake")
    ]
    chunks.append(_chunk({}, "stop", include_usage))
    if include_usage:
        last = _chunk({}, None, False)
        last["choices"] = []
        last["usage"] = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        chunks.append(last)
    events = [b"data: " + _dumps(c) + b"\n\n" for c in chunks]
    events.append(b"data: [DONE]\n\n")
    return events


def _plain(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    head = (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + ctype + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def _chunked_sse(events: list[bytes]) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    return head + body + b"0\r\n\r\n"


RESP_JSON = _plain("200 OK", _dumps(_completion()))
RESP_STREAM = _chunked_sse(_sse_events(include_usage=False))
RESP_STREAM_USAGE = _chunked_sse(_sse_events(include_usage=True))
RESP_MODELS = _plain(
    "200 OK",
    _dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}),
)
RESP_HEALTH = _plain("200 OK", b"ok", b"text/plain")
RESP_404 = _plain("404 Not Found", b'{"error":{"message":"not found"}}')
RESP_400 = _plain("400 Bad Request", b'{"error":{"message":"bad request"}}')
RESP_413 = _plain("413 Payload Too Large", b'{"error":{"message":"too large"}}')


def _completion_response(body: bytes) -> bytes:
    try:
        req = json.loads(body)
    except ValueError:
        return RESP_400
    if not isinstance(req, dict):
        return RESP_400
    if not req.get("stream"):
        return RESP_JSON
    opts = req.get("stream_options") or {}
    return (
        RESP_STREAM_USAGE if isinstance(opts, dict) and opts.get("include_usage") else RESP_STREAM
    )


def route(method: bytes, path: bytes, body: bytes) -> bytes:
    """The canned response for one request."""
    path = path.split(b"?", 1)[0]
    if method == b"POST" and path in (b"/v1/chat/completions", b"/chat/completions"):
        return _completion_response(body)
    if method == b"GET" and path in (b"/v1/models", b"/models"):
        return RESP_MODELS
    if method == b"GET" and path in (b"/health", b"/healthz"):
        return RESP_HEALTH
    return RESP_404


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; ``None`` while incomplete."""
    out = bytearray()
    pos = start
    for _ in range(100_000):
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0] or b"0", 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            return (bytes(out), end + 4) if end >= 0 else None
        if len(buf) < eol + 2 + size + 2:
            return None
        out += buf[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
        if len(out) > MAX_BODY:
            raise ValueError("body too large")
    raise ValueError("too many chunks")


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 server side: keep-alive, pipelining, Content-Length and chunked bodies."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for _ in range(1000):  # bounded: at most this many pipelined requests per read
            if not self._handle_one():
                return

    def _reply(self, payload: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(payload)
        if close:
            self.transport.close()

    def _handle_one(self) -> bool:
        """Serve one complete request from the buffer; False when more bytes are needed."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._reply(RESP_413, close=True)
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._reply(RESP_400, close=True)
            return False
        method, path, version = parts
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        try:
            body_end = self._body_end(headers, end + 4)
        except ValueError:
            self._reply(RESP_413, close=True)
            return False
        if body_end is None:
            return False
        body, consumed = body_end
        del self.buf[:consumed]
        conn = headers.get(b"connection", b"")
        close = conn == b"close" or (version == b"HTTP/1.0" and conn != b"keep-alive")
        self._reply(route(method, path, body), close)
        return not close

    def _body_end(self, headers: dict[bytes, bytes], start: int) -> tuple[bytes, int] | None:
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            return _dechunk(self.buf, start)
        length = int(headers.get(b"content-length", b"0") or b"0")
        if length > MAX_BODY:
            raise ValueError("body too large")
        if len(self.buf) < start + length:
            return None
        return bytes(self.buf[start : start + length]), start + length


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
