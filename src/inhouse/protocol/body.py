"""Reading and validating request bodies, with a size limit and field-naming errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

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
