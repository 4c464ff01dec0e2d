"""A stream whose client is gone before its first event still tells the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from starlette.requests import ClientDisconnect

from inhouse.protocol.http import respond
from inhouse.protocol.replies import StreamReply


def test_a_stream_whose_client_left_before_it_started_is_closed_and_reported() -> None:
    started: list[bool] = []
    closed: list[bool] = []

    async def events() -> AsyncGenerator[bytes, None]:
        started.append(True)
        yield b"data: {}\n\n"

    async def send(_message: object) -> None:
        raise OSError("the client is gone")

    async def receive() -> dict[str, str]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    response = respond(StreamReply(events(), "req-1", lambda: closed.append(True)))
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST", "headers": []}
    with pytest.raises((OSError, ClientDisconnect)):
        asyncio.run(response(scope, receive, send))  # type: ignore[arg-type]
    assert closed == [True]
    assert started == []  # the events never ran, so only on_close could settle the call
