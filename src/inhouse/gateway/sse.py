"""Server-sent events framing of OpenAI streams."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, error_type: str, code: str | None) -> bytes:
    return event({"error": {"message": message, "type": error_type, "param": None, "code": code}})
