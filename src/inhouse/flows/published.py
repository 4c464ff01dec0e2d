"""The published flows a gateway answers ``flow:NAME`` with, built once per version and
re-read from the store every few seconds, so an apply or a rollback from the CLI or
another replica takes effect within that time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from inhouse.errors import EngineUnavailableError
from inhouse.flows.runner import CompiledFlow
from inhouse.flows.step_registry import StepRegistry
from inhouse.flows.store import FlowStore

_MAX_CACHED = 10_000

log = logging.getLogger(__name__)


class PublishedFlows:
    def __init__(
        self,
        store: FlowStore,
        registry: StepRegistry,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._registry = registry
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[CompiledFlow | None, float]] = {}

    async def get(self, tenant_id: str, name: str) -> CompiledFlow | None:
        key = (tenant_id, name)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        previous = cached[0] if cached is not None else None
        compiled = await asyncio.to_thread(self._load, tenant_id, name, previous)
        self._cache.pop(key, None)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))  # the least recently loaded
        self._cache[key] = (compiled, self._clock() + self._ttl)
        return compiled

    def _load(
        self, tenant_id: str, name: str, previous: CompiledFlow | None
    ) -> CompiledFlow | None:
        """In a worker thread: building steps (a lexicon's automaton) may take a while."""
        found = self._store.published(tenant_id, name)
        if found is None:
            return None
        if previous is not None and previous.version == found.version:
            return previous  # unchanged: keep the steps already built
        try:
            return CompiledFlow(found.spec, self._registry, version=found.version)
        except Exception as exc:  # a lexicon file gone since apply, a plug-in missing ...
            log.error("flow %s version %d cannot be built: %s", name, found.version, exc)
            raise EngineUnavailableError(
                f"flow {name!r} cannot run now; the gateway's log says why"
            ) from None
