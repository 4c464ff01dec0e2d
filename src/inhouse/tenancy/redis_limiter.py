"""Admission counters in Redis, shared by every gateway replica.

One Lua script checks every limit of every subject and reserves in the same atomic
step, so N replicas admit exactly what one would: no budget overshoot, no limit
multiplied by the replica count. Concurrency slots are leases in a sorted set: a
replica killed mid-request frees its slots when the lease runs out.

If Redis cannot be reached the limiter fails closed (503, nothing admitted) or open
(admitted unmetered by Redis), as configured; ``healthy`` reports it for /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from inhouse.errors import QuotaStoreUnavailableError
from inhouse.tenancy.admission import (
    LIMIT_NAMES,
    Subject,
    Ticket,
    WindowClock,
    Windows,
    new_ticket,
    refusal,
    refuse_impossible,
)

log = logging.getLogger(__name__)

_KEY_PREFIX = "inhouse:quota:"
_MAX_CONNECTIONS = 64
_TIMEOUT_SECONDS = 2.0
_SETTLE_RETRY_SECONDS = 1.0
_WINDOW_TTL_SECONDS = {"minute": 120, "day": 2 * 86400, "month": 32 * 86400}

# ARGV: now-independent scalars first, then 6 values per subject:
#   subject id, concurrency, rpm, tpm, per-day, per-month limits (-1: none)
# KEYS per subject: lease set, rpm, tpm, day, month counters.
_ACQUIRE = """
local estimate = tonumber(ARGV[1])
local ticket = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local ttl_minute, ttl_day, ttl_month = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = (#ARGV - 6) / 6
for i = 0, n - 1 do
  local a, k = 7 + i * 6, 1 + i * 5
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now_ms)
  local checks = {
    {tonumber(ARGV[a + 1]), redis.call('ZCARD', KEYS[k]), 1},
    {tonumber(ARGV[a + 2]), tonumber(redis.call('GET', KEYS[k + 1]) or '0'), 1},
    {tonumber(ARGV[a + 3]), tonumber(redis.call('GET', KEYS[k + 2]) or '0'), estimate},
    {tonumber(ARGV[a + 4]), tonumber(redis.call('GET', KEYS[k + 3]) or '0'), estimate},
    {tonumber(ARGV[a + 5]), tonumber(redis.call('GET', KEYS[k + 4]) or '0'), estimate},
  }
  for j, c in ipairs(checks) do
    if c[1] >= 0 and c[2] + c[3] > c[1] then
      return {i, j, c[2]}
    end
  end
end
for i = 0, n - 1 do
  local k = 1 + i * 5
  redis.call('ZADD', KEYS[k], now_ms + lease_ms, ticket)
  redis.call('PEXPIRE', KEYS[k], lease_ms)
  redis.call('INCR', KEYS[k + 1])
  redis.call('EXPIRE', KEYS[k + 1], ttl_minute)
  redis.call('INCRBY', KEYS[k + 2], estimate)
  redis.call('EXPIRE', KEYS[k + 2], ttl_minute)
  redis.call('INCRBY', KEYS[k + 3], estimate)
  redis.call('EXPIRE', KEYS[k + 3], ttl_day)
  redis.call('INCRBY', KEYS[k + 4], estimate)
  redis.call('EXPIRE', KEYS[k + 4], ttl_month)
end
return {-1}
"""

# KEYS per subject: lease set, tpm, day, month counters. ARGV: ticket, delta.
# The delta applies only while the ticket's lease is held, so sending a settlement
# twice (a retry after a timeout) never refunds twice; a ticket whose lease ran out
# keeps its whole reservation counted.
_SETTLE = """
local ticket, delta = ARGV[1], tonumber(ARGV[2])
for k = 1, #KEYS, 4 do
  if redis.call('ZREM', KEYS[k], ticket) == 1 and delta ~= 0 then
    for j = 1, 3 do
      if redis.call('EXISTS', KEYS[k + j]) == 1 then
        redis.call('INCRBY', KEYS[k + j], delta)
      end
    end
  end
end
return 0
"""


# KEYS: the lease sets of one ticket's subjects. ARGV: ticket, lease in ms.
_RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
for k = 1, #KEYS do
  if redis.call('ZADD', KEYS[k], 'XX', 'CH', until_ms, ARGV[1]) == 1 then
    redis.call('PEXPIRE', KEYS[k], ARGV[2])
  end
end
return 0
"""


def _keys(subject: Subject, windows: Windows) -> list[str]:
    base = f"{_KEY_PREFIX}{subject.id}"
    return [
        f"{base}:leases",
        f"{base}:rpm:{windows.minute}",
        f"{base}:tpm:{windows.minute}",
        f"{base}:day:{windows.day}",
        f"{base}:month:{windows.month}",
    ]


class RedisLimiter:
    def __init__(self, url: str, *, fail_open: bool, lease_seconds: float) -> None:
        # Admission's pool blocks: a burst waits for a free connection instead of failing.
        # Settlement has a connection of its own, so a burst of admissions never starves it.
        self._redis = _client(url, _MAX_CONNECTIONS)
        self._settler_redis = _client(url, 1)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._settle = self._redis.register_script(_SETTLE)
        self._fail_open = fail_open
        self._windows = WindowClock()
        self._lease_ms = int(lease_seconds * 1000)
        self._to_settle: list[tuple[Ticket, int]] = []
        self._settle_wake = asyncio.Event()
        self._settler: asyncio.Task[None] | None = None
        self._renew = self._redis.register_script(_RENEW)
        self._held: dict[str, Ticket] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._closing = False
        self._reachable = True

    async def acquire(self, subjects: Sequence[Subject], estimate: int) -> Ticket:
        refuse_impossible(subjects, estimate)
        windows, now = self._windows.now()
        ticket = new_ticket(subjects, estimate, windows)
        keys: list[str] = []
        args: list[str | int] = [
            estimate,
            ticket.id,
            self._lease_ms,
            _WINDOW_TTL_SECONDS["minute"],
            _WINDOW_TTL_SECONDS["day"],
            _WINDOW_TTL_SECONDS["month"],
        ]
        for subject in subjects:
            keys += _keys(subject, windows)
            args.append(subject.id)
            args += [_limit_arg(subject.limit(name)) for name in LIMIT_NAMES]
        try:
            result = await self._acquire(keys=keys, args=args)
        except RedisError as exc:
            return self._unreachable(exc, ticket)
        self._reachable = True
        if int(result[0]) >= 0:
            subject = subjects[int(result[0])]
            name = LIMIT_NAMES[int(result[1]) - 1]
            needed = estimate if name.startswith("tokens") else 1
            raise refusal(subject, name, int(result[2]), needed, windows, now)
        self._held[ticket.id] = ticket
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="quota-leases")
        return ticket

    async def _renew_forever(self) -> None:
        """Extend the leases of requests still running, so a long one keeps its slot."""
        interval = self._lease_ms / 3000
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=interval)
            held = list(self._held.values())
            if self._closing or not held:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for ticket in held:
                        leases = [_keys(subject, ticket.windows)[0] for subject in ticket.subjects]
                        pipe.evalsha(
                            self._renew.sha, len(leases), *leases, ticket.id, self._lease_ms
                        )
                    await pipe.execute()
            except NoScriptError:
                await self._redis.script_load(_RENEW)
            except RedisError as exc:
                log.warning("renewing %d quota leases failed: %s", len(held), exc)

    def _unreachable(self, exc: Exception, ticket: Ticket) -> Ticket:
        if self._reachable:
            log.error(
                "Redis quota store unreachable (%s); admission fails %s",
                exc,
                "open: requests are admitted without quota checks"
                if self._fail_open
                else "closed: requests with quotas are refused",
            )
        self._reachable = False
        if self._fail_open:
            return Ticket(ticket.id, ticket.subjects, ticket.estimate, ticket.windows, False)
        raise QuotaStoreUnavailableError(
            "The quota store is unreachable; requests of tenants with quotas are refused "
            "until it is back."
        )

    def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        """Queue the settlement; one background task sends queued ones in a pipeline."""
        if not ticket.enforced:
            return
        self._held.pop(ticket.id, None)
        self._to_settle.append((ticket, actual_tokens))
        self._settle_wake.set()
        if self._settler is None:
            self._settler = asyncio.create_task(self._settle_forever(), name="quota-settle")

    async def _settle_forever(self) -> None:
        while True:
            await self._settle_wake.wait()
            self._settle_wake.clear()
            while self._to_settle:
                if await self._settle_queued() or self._closing:
                    continue
                await asyncio.sleep(_SETTLE_RETRY_SECONDS)  # Redis is away: try again
            if self._closing:
                return

    async def _settle_queued(self) -> bool:
        """Send what is queued; on failure put it back (or, when closing, give it up)."""
        batch, self._to_settle = self._to_settle, []
        try:
            try:
                await self._send_settlements(batch)
            except NoScriptError:  # Redis restarted and forgot the script: load it, once
                await self._settler_redis.script_load(_SETTLE)
                await self._send_settlements(batch)
        except RedisError as exc:
            if self._closing:
                # The reservations stay counted (never an overshoot); their leases expire.
                log.error("could not settle %d quota tickets before exit: %s", len(batch), exc)
            else:
                log.warning("settling %d quota tickets failed (%s); retrying", len(batch), exc)
                self._to_settle[:0] = batch
            return False
        return True

    async def _send_settlements(self, batch: list[tuple[Ticket, int]]) -> None:
        async with self._settler_redis.pipeline(transaction=False) as pipe:
            for ticket, actual_tokens in batch:
                keys: list[str] = []
                for subject in ticket.subjects:
                    leases, _, tpm, day, month = _keys(subject, ticket.windows)
                    keys += [leases, tpm, day, month]
                delta = actual_tokens - ticket.estimate
                pipe.evalsha(self._settle.sha, len(keys), *keys, ticket.id, delta)
            await pipe.execute()

    forgets_on_restart = False
    """Redis keeps the counters while gateways restart."""

    def seed(self, used: Mapping[str, Mapping[str, int]]) -> None:
        return None

    @property
    def fails_closed(self) -> bool:
        return not self._fail_open

    async def reachable(self) -> bool:
        try:
            await self._redis.ping()
        except RedisError as exc:
            if self._reachable:
                log.error("Redis quota store unreachable: %s", exc)
            self._reachable = False
            return False
        self._reachable = True
        return True

    async def close(self) -> None:
        self._closing = True  # the settler sends what is queued, then ends
        self._closed.set()
        if self._renewer is not None:
            await self._renewer
        if self._settler is not None and not self._settler.done():
            self._settle_wake.set()
            await self._settler
        for client in (self._redis, self._settler_redis):
            await client.aclose()
            await client.connection_pool.disconnect()


def _client(url: str, connections: int) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=_TIMEOUT_SECONDS,
        socket_timeout=_TIMEOUT_SECONDS,
        socket_connect_timeout=_TIMEOUT_SECONDS,
    )
    return redis.Redis(connection_pool=pool)


def _limit_arg(value: int | None) -> int:
    return -1 if value is None else value
