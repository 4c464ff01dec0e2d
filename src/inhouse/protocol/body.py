"""Reading and validating request bodies: a size limit, a bound on their structure checked
before they are parsed, and errors that name the field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from inhouse.errors import InvalidRequestError, PayloadTooLargeError

Model = TypeVar("Model", bound=BaseModel)

# Bodies go on to remote engines as JSON written by orjson, which holds integers from
# -2**63 to 2**64 - 1; pydantic reads any integer. Only a run of 19 digits or more can
# be out of that range, so bodies without one are not walked. The run is found by
# turning every digit into 0 and searching for nineteen of them: a regex costs ten
# times as much, more than pydantic's parse.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(model: type[Model], body: bytes) -> Model:
    if not body:
        raise InvalidRequestError("the request body is empty; send a JSON object")
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise _field_error(exc) from None
    if _LONG_NUMBER in body.translate(_DIGITS_TO_ZERO):
        field = _integer_out_of_range(parsed.model_dump(exclude_unset=True), ())
        if field is not None:
            name = ".".join(field)
            raise InvalidRequestError(f"{name}: integer out of the 64-bit range", param=name)
    return parsed


def _integer_out_of_range(value: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The path of the first integer in ``value`` that JSON on the wire cannot hold."""
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else path
    items: Iterable[tuple[object, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _integer_out_of_range(item, (*path, str(key)))
        if found is not None:
            return found
    return None


def _field_error(exc: ValidationError) -> InvalidRequestError:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return InvalidRequestError(f"the request body is not valid JSON: {first['msg']}")
    if first["type"] == "model_type":
        return InvalidRequestError("the request body must be a JSON object")
    location = [str(part) for part in first["loc"]]
    # Unions add the member's type name to the location; keep only the field path.
    field = ".".join(p for p in location if not is_type_tag(p))
    return InvalidRequestError(f"{field}: {first['msg']}", param=field or None)


def is_type_tag(part: str) -> bool:
    """Whether a part of an error's location names a union member, not a field."""
    return part in {"str", "list[str]", "list[TextPart]", "int", "float", "bool"} or (
        "[" in part and "]" in part
    )


@dataclass(frozen=True, slots=True)
class BodyBounds:
    """How large an inference request may be, besides its size in bytes."""

    max_messages: int
    max_json_values: int
    max_prompt_characters: int


class GenerationBody(Protocol):
    """What the bounds look at in a parsed chat or completion request."""

    @property
    def prompt_characters(self) -> int: ...


Generation = TypeVar("Generation", bound=BaseModel)


def parse_generation(model: type[Generation], body: bytes, bounds: BodyBounds) -> Generation:
    """A chat or completion request, its structure bounded before it is parsed: parsing
    costs time per JSON value, so a body of a hundred thousand tiny messages (or list
    items of an unknown field) is refused in a byte count rather than built. Then the
    messages and the prompt's characters are checked exactly."""
    if body.count(b'"role"') > bounds.max_messages:
        raise PayloadTooLargeError(
            f"too many messages: at most {bounds.max_messages} in one request",
            param="messages",
        )
    if _json_values(body, bounds.max_json_values) > bounds.max_json_values:
        raise PayloadTooLargeError(
            f"the request body holds too many JSON values (objects, arrays, list items): "
            f"at most {bounds.max_json_values}"
        )
    parsed = parse_body(model, body)
    messages = getattr(parsed, "messages", None)
    if messages is not None and len(messages) > bounds.max_messages:
        raise PayloadTooLargeError(
            f"too many messages: at most {bounds.max_messages} in one request",
            param="messages",
        )
    characters = cast(GenerationBody, parsed).prompt_characters
    if characters > bounds.max_prompt_characters:
        raise PayloadTooLargeError(
            f"the prompt has {characters} characters; at most {bounds.max_prompt_characters}",
            param="messages" if messages is not None else "prompt",
        )
    return parsed


def _json_values(body: bytes, bound: int) -> int:
    """An upper bound of the values in a JSON body, in a few passes over its bytes.

    The quick count (commas, braces, brackets) includes those inside strings; only when it
    is over ``bound`` is it made exact: long prose has many commas, all in one value. Then
    every string counts as a value, and the commas, braces and brackets outside strings."""
    quick = body.count(b",") + body.count(b"{") + body.count(b"[")
    if quick <= bound:
        return quick
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes: no string ends there
    strings = plain.count(b'"') // 2
    if strings > bound:
        return strings
    outside = plain.split(b'"')[::2]
    return strings + sum(part.count(b",") + part.count(b"{") + part.count(b"[") for part in outside)
