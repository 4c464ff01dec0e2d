"""Reading and validating request bodies, with a size limit and field-naming errors."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from inhouse.errors import InvalidRequestError, PayloadTooLargeError

Model = TypeVar("Model", bound=BaseModel)


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
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _field_error(exc) from None


def _field_error(exc: ValidationError) -> InvalidRequestError:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return InvalidRequestError(f"the request body is not valid JSON: {first['msg']}")
    if first["type"] == "model_type":
        return InvalidRequestError("the request body must be a JSON object")
    location = [str(part) for part in first["loc"]]
    # Unions add the member's type name to the location; keep only the field path.
    field = ".".join(p for p in location if not _is_type_tag(p))
    return InvalidRequestError(f"{field}: {first['msg']}", param=field or None)


def _is_type_tag(part: str) -> bool:
    return part in {"str", "list[str]", "list[TextPart]", "int", "float", "bool"} or (
        "[" in part and "]" in part
    )
