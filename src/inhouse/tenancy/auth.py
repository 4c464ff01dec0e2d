"""Authentication on the request path: bearer key → principal, cached briefly.

The cache keeps a lookup for ``ttl`` seconds, so a revoked key stops working within
that time on every replica without a database query per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from inhouse.errors import AuthenticationError
from inhouse.tenancy.models import Principal
from inhouse.tenancy.service import TenantService

_MAX_CACHED = 100_000


class Authenticator:
    def __init__(
        self,
        tenants: TenantService,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tenants = tenants
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            principal = await asyncio.to_thread(self._tenants.principal_for_plaintext, token)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[token] = (principal, now + self._ttl)
        if principal is None:
            raise AuthenticationError("Incorrect API key provided.")
        return principal


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError(
            "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Malformed Authorization header: expected 'Bearer <key>'.")
    return token
