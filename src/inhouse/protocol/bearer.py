"""``Authorization: Bearer <token>``: the one parser of every inhouse server."""

from __future__ import annotations

from inhouse.errors import AuthenticationError


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization`` header; 401 when it is missing or not Bearer."""
    if not authorization:
        raise AuthenticationError(
            "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Malformed Authorization header: expected 'Bearer <key>'.")
    return token
