from __future__ import annotations

import orjson
import pytest

from inhouse.errors import InvalidRequestError, PayloadTooLargeError
from inhouse.protocol.body import BodyBounds, parse_body, parse_generation
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


BOUNDS = BodyBounds(max_messages=100, max_json_values=1000, max_prompt_characters=50_000)
HELLO = {"role": "user", "content": "hello"}


def generation(**fields: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": [HELLO], **fields})


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        # written as the attacks: bodies that cost far more to parse than to send
        (orjson.dumps({"model": "m", "messages": [HELLO] * 101}), "too many messages"),
        (generation(logit_bias={str(i): 1 for i in range(2000)}), "too many JSON values"),
        (generation(extra=[0] * 5000), "too many JSON values"),
        (
            orjson.dumps(
                {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}] * 900}]}
            ),
            "too many JSON values",
        ),
        (
            orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 50_001}]}),
            "50001 characters",
        ),
    ],
)
def test_bodies_over_the_bounds_are_refused_with_413(body: bytes, refusal: str) -> None:
    with pytest.raises(PayloadTooLargeError, match=refusal) as caught:
        parse_generation(ChatCompletionRequest, body, BOUNDS)
    assert caught.value.status_code == 413


def test_long_prose_with_many_commas_and_quotes_is_one_value() -> None:
    prose = 'She said "yes, {no}, [maybe]", then left, and so on. ' * 900
    parsed = parse_generation(
        ChatCompletionRequest,
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": prose}]}),
        BOUNDS,
    )
    assert parsed.prompt_characters == len(prose)


def test_stop_sequences_are_bounded_in_number_and_length() -> None:
    assert parse_body(ChatCompletionRequest, generation(stop=["x" * 256])).stop == ["x" * 256]
    for stop in (["x" * 257], "x" * 257, ["a", "b", "c", "d", "e"]):
        with pytest.raises(InvalidRequestError) as caught:
            parse_body(ChatCompletionRequest, generation(stop=stop))
        assert (caught.value.param or "").startswith("stop")
