"""Authentication on the request path: bearer token → principal, cached briefly.

A token is an API key (``ih_…``, for programs) or a login session (``ihs_…``, for
people, made by password + TOTP). The cache keeps a lookup for ``ttl`` seconds, so a
revoked key or session stops working within that time on every replica without a
database query per request; a session's expiry is checked on every request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from inhouse.errors import AuthenticationError
from inhouse.security.api_keys import looks_like_api_key
from inhouse.store.tables import utcnow
from inhouse.tenancy.models import Principal
from inhouse.tenancy.service import TenantService
from inhouse.tenancy.users import SESSION_PREFIX, UserService, looks_like_session_token

_MAX_CACHED = 100_000


class Authenticator:
    def __init__(
        self,
        tenants: TenantService,
        users: UserService,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tenants = tenants
        self._users = users
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token (``protocol.bearer`` takes it off the header)."""
        if not (looks_like_api_key(token) or looks_like_session_token(token)):
            raise AuthenticationError("Incorrect API key provided.")
        cached = self._cache.get(token)
        if cached is not None and cached[1] > self._clock():
            principal = cached[0]
        else:
            principal = await self._look_up(token)
        if principal is None:
            raise AuthenticationError("Incorrect API key provided.")
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise AuthenticationError("The login session has expired.", code="session_expired")
        return principal

    def forget_session(self, principal: Principal) -> None:
        """Drop a logged-out session from this replica's cache at once (call it on the
        event loop, where the cache is written)."""
        stale = [
            token
            for token, (cached, _) in self._cache.items()
            if cached is not None and cached.session_id == principal.session_id
        ]
        for token in stale:
            self._cache.pop(token, None)

    async def _look_up(self, token: str) -> Principal | None:
        """One database lookup per token at a time, however many requests wait for it."""
        pending = self._lookups.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._lookups[token] = future
        try:
            look_up = (
                self._users.principal_for_session
                if token.startswith(SESSION_PREFIX)
                else self._tenants.principal_for_plaintext
            )
            principal = await asyncio.to_thread(look_up, token)
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
