"""Authentication on the request path: bearer key → principal, cached briefly.

The cache keeps a lookup for ``ttl`` seconds, so a revoked key stops working within
that time on every replica without a database query per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from inhouse.errors import AuthenticationError
from inhouse.security.api_keys import looks_like_api_key
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
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        cached = self._cache.get(token)
        if cached is not None and cached[1] > self._clock():
            principal = cached[0]
        else:
            principal = await self._look_up(token)
        if principal is None:
            raise AuthenticationError("Incorrect API key provided.")
        return principal

    async def _look_up(self, token: str) -> Principal | None:
        """One database lookup per token at a time, however many requests wait for it."""
        pending = self._lookups.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._lookups[token] = future
        try:
            principal = await asyncio.to_thread(self._tenants.principal_for_plaintext, token)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._lookups[token]
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (principal, self._clock() + self._ttl)
        future.set_result(principal)
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
    if not looks_like_api_key(token):
        raise AuthenticationError("Incorrect API key provided.")
    return token
