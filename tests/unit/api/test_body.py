from __future__ import annotations

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.protocol.body import parse_body
from inhouse.protocol.openai import ChatCompletionRequest


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role"),
        (b'{"model": "m", "messages": [{"role": "user"}], "temperature": 9}', "temperature"),
        (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}', "max_tokens"),
        (b'{"model": "", "messages": [{"role": "user"}]}', "model"),
    ],
)
def test_invalid_fields_are_named(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_body(ChatCompletionRequest, body)
    assert caught.value.param == param
    assert caught.value.status_code == 400


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]"])
def test_bodies_that_are_not_json_objects(body: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        parse_body(ChatCompletionRequest, body)


def test_unknown_fields_are_kept_for_upstreams() -> None:
    request = parse_body(
        ChatCompletionRequest,
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": []}',
    )
    assert request.model_dump(exclude_unset=True)["tools"] == []
