"""A node registering itself with a gateway: ``inhouse node ... --register GATEWAY_URL``.

Once its model is loaded, the node POSTs what it is (advertised URL, model, tier,
capacity, memory) to the gateway's ``/v1/node/register`` with the fleet's node token,
and again every 30 seconds as a heartbeat, so that a gateway whose registry lost the
node (or a new gateway on an empty database) learns it again. A failure is logged and
retried sooner (5 s, doubling up to the heartbeat interval); it never stops the node.

A node that registers itself waits for an operator's approval; once approved, the
gateway hands it its own token in the answer to a registration, once. The node keeps it
(``NodeToken``, in a file only its owner reads) and from then on accepts that token on its
routes, no longer the fleet's: a holder of the fleet token cannot call it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from inhouse.config import GatewaySettings
from inhouse.engine.remote import create_session
from inhouse.protocol.types import Tier
from inhouse.security.secret_file import write_private_file

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
FIRST_RETRY_SECONDS = 5.0
_READY_CHECK_SECONDS = 0.5


def register_url(gateway_url: str) -> str:
    """``http://gw:8000``, ``http://gw:8000/`` or ``http://gw:8000/v1`` → its register URL."""
    return gateway_url.rstrip("/").removesuffix("/v1") + "/v1/node/register"


def host_memory_bytes() -> int:
    """The machine's memory: what a CPU node's KV cache lives in (stable across heartbeats)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Registration:
    """Where to register and what to say; ``capacity`` and ``ready`` are read when sent."""

    gateway_url: str
    advertise_url: str
    tier: Tier
    model: str
    token: str
    name: str | None = None
    heartbeat_seconds: float = HEARTBEAT_SECONDS

    def body(self, capacity: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "url": self.advertise_url,
            "tier": self.tier.value,
            "models": [self.model],
            "capacity": capacity,
            "memory_bytes": host_memory_bytes(),
        }
        if self.name is not None:
            body["name"] = self.name
        return body


class NodeToken:
    """The token a node's callers must present: the fleet's, until the gateway hands the
    node its own (kept in ``path``, owner-readable, across restarts)."""

    def __init__(self, fleet_token: str, path: Path) -> None:
        self._path = path
        own = path.read_text().strip() if path.exists() else ""
        self.value = own or fleet_token

    def replace(self, own: str) -> None:
        write_private_file(self._path, own + "\n", replace=True)
        self.value = own


def token_file(data_dir: Path, advertise_url: str) -> Path:
    """Where a node advertised at ``advertise_url`` keeps its own token."""
    digest = hashlib.sha256(advertise_url.encode()).hexdigest()[:16]
    return data_dir / f"node-token-{digest}"


class Registrar:
    """Runs a ``Registration`` in the background of a node's lifespan."""

    def __init__(
        self,
        registration: Registration,
        gateway: GatewaySettings,
        *,
        ready: Callable[[], bool],
        capacity: Callable[[], int],
        token: NodeToken | None = None,
    ) -> None:
        self._registration = registration
        self._gateway = gateway
        self._ready = ready
        self._capacity = capacity
        self._token = token
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        """Set after the first registration the gateway accepted."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="node registration")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while not self._ready():  # noqa: ASYNC110 (the engine's readiness is a flag, no event)
            await asyncio.sleep(_READY_CHECK_SECONDS)
        registration = self._registration
        url = register_url(registration.gateway_url)
        retry = FIRST_RETRY_SECONDS
        failing = False
        async with create_session(self._gateway) as session:
            while True:
                problem = await self._register_once(session, url)
                if problem is None:
                    if failing or not self.registered.is_set():
                        log.info("registered with the gateway at %s as %s (%s)", url,
                                 registration.advertise_url, registration.tier.value)  # fmt: skip
                    failing, retry = False, FIRST_RETRY_SECONDS
                    self.registered.set()
                    delay = registration.heartbeat_seconds
                else:
                    log.warning("cannot register with the gateway at %s: %s; retrying in %.0f s",
                                url, problem, retry)  # fmt: skip
                    failing, delay = True, retry
                    retry = min(retry * 2, registration.heartbeat_seconds)
                await asyncio.sleep(delay)

    async def _register_once(self, session: aiohttp.ClientSession, url: str) -> str | None:
        """None when the gateway accepted the registration, else what went wrong."""
        registration = self._registration
        headers = {
            "Authorization": f"Bearer {registration.token}",
            "Content-Type": "application/json",
        }
        body = orjson.dumps(registration.body(self._capacity()))
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                if response.status == 200:
                    self._take_token(payload)
                    return None
                return f"it answered {response.status}: {_message(payload)}"
        except aiohttp.ClientError as exc:
            return f"unreachable ({type(exc).__name__})"
        except TimeoutError:
            return "no answer within 10 s"

    def _take_token(self, payload: bytes) -> None:
        """The node's own token, when the answer carries it (once, after approval)."""
        try:
            given = orjson.loads(payload).get("token")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(given, str) and given and self._token is not None:
            self._token.replace(given)
            log.info("the gateway approved this node: its own token replaces the fleet's")


def _message(payload: bytes) -> str:
    try:
        error = orjson.loads(payload).get("error", {})
        return str(error.get("message", ""))[:300] if isinstance(error, dict) else ""
    except (orjson.JSONDecodeError, AttributeError):
        return payload[:300].decode(errors="replace")
