"""Which engine client answers which model name: a snapshot of the registry, refreshed
often, and the fleet for names only nodes serve.

The snapshot is re-read every ``registry_refresh_seconds`` so that models added or
removed by the CLI (another process) take effect within seconds, without a
database query on the request path. Local engines load on first use (the built-in
one at start-up); remote clients share one pooled HTTP session. The gateway's own
models answer before the fleet's, so a node cannot take over a registered name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiohttp

from inhouse.config import Settings
from inhouse.engine.base import TextGenerator
from inhouse.engine.client import Answer, AnswerStream, EngineClient, EngineRequest, Origin
from inhouse.engine.local import LocalEngine
from inhouse.engine.local_client import LocalEngineClient
from inhouse.engine.remote import UpstreamClient, create_session
from inhouse.engine.upstream_client import UpstreamEngineClient
from inhouse.errors import NotFoundError
from inhouse.monitor.metrics import EngineGauge
from inhouse.protocol.openai import ModelCard, ModelList
from inhouse.registry.builtin import ensure_builtin_model
from inhouse.registry.models import ModelEntry, ModelKind, ModelRegistry
from inhouse.tenancy.models import Principal

log = logging.getLogger(__name__)

LocalEngineFactory = Callable[[ModelEntry], TextGenerator]
"""Builds the in-process engine of a local model entry (the transformers engine, or a fake)."""


class FleetModels(Protocol):
    """The fleet as the pool sees it: which names its nodes serve, and its client."""

    created: datetime

    def models(self, tenant_id: str) -> list[str]: ...

    def serves(self, model: str, tenant_id: str) -> bool: ...

    async def generate(self, request: EngineRequest) -> Answer | AnswerStream: ...


@dataclass(frozen=True, slots=True)
class Target:
    """A model name resolved: the client that answers it, and what admission needs."""

    name: str
    engine: EngineClient
    is_local: bool
    """In-process: the engine's default max_tokens applies and none is injected."""
    origin: Origin
    """Who answers, as usage records name it until an answer says more precisely."""


_FLEET = Origin(model_version="fleet", node="")
"""A fleet model before a node answers."""


class EnginePool:
    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        local_engine: LocalEngineFactory | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._new_local_engine = local_engine or self._new_transformers_engine
        self._entries: dict[str, ModelEntry] = {}
        self._local: dict[str, TextGenerator] = {}
        self._clients: dict[str, EngineClient] = {}
        self.fleet: FleetModels | None = None
        self._session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = create_session(self._settings.gateway)
        await self.refresh()
        for entry in self._entries.values():
            if entry.kind is ModelKind.BUILTIN:
                self.local(entry)
        self._refresher = asyncio.create_task(self._refresh_forever(), name="registry-refresh")

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.gateway.registry_refresh_seconds)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing the model registry failed; keeping the last snapshot")

    async def refresh(self) -> None:
        entries = [
            entry
            for entry in await asyncio.to_thread(self._registry.list)
            if self._settings.builtin_model or entry.kind is not ModelKind.BUILTIN
        ]
        self._entries = {entry.name: entry for entry in entries}
        live_ids = {entry.id for entry in entries}
        for entry_id in [i for i in self._clients if i not in live_ids]:
            del self._clients[entry_id]
        for entry_id in [i for i in self._local if i not in live_ids]:
            task = asyncio.create_task(self._local.pop(entry_id).close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def session(self) -> aiohttp.ClientSession:
        """The pooled HTTP session of remote engines (once started)."""
        if self._session is None:
            raise RuntimeError("the engine pool is not started")
        return self._session

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def model_list(self, principal: Principal) -> ModelList:
        """The models the caller's tenant may use: the gateway's own, then the fleet's."""
        cards = [
            ModelCard(
                id=e.name,
                created=int(e.created_at.timestamp()),
                owned_by="inhouse" if e.tenant_id is None else principal.tenant_name,
            )
            for e in self._entries.values()
            if e.visible_to(principal.tenant_id)
        ]
        if self.fleet is not None:
            known = {card.id for card in cards}
            created = int(self.fleet.created.timestamp())
            cards += [
                ModelCard(id=name, created=created, owned_by="fleet")
                for name in self.fleet.models(principal.tenant_id)
                if name not in known
            ]
        return ModelList(data=cards)

    def resolve(self, name: str, *, tenant_id: str | None) -> Target:
        """The client of a model name; another tenant's model answers as a missing one.

        ``tenant_id`` None: the caller serves every model (a node, not a tenant).
        """
        entry = self._entries.get(name)
        if entry is not None and (tenant_id is None or entry.visible_to(tenant_id)):
            origin = Origin(model_version=entry.id, node=entry.node_label)
            return Target(name, self.client(entry), entry.is_local, origin)
        fleet = self.fleet
        if fleet is not None and tenant_id is not None and fleet.serves(name, tenant_id):
            return Target(name, fleet, is_local=False, origin=_FLEET)
        raise NotFoundError(
            f"The model '{name}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

    def entry(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def client(self, entry: ModelEntry) -> EngineClient:
        client = self._clients.get(entry.id)
        if client is None:
            origin = Origin(model_version=entry.id, node=entry.node_label)
            if entry.is_local:
                client = LocalEngineClient(self.local(entry), origin)
            else:
                client = UpstreamEngineClient(
                    self._upstream(entry), entry.upstream_model or entry.name, origin
                )
            self._clients[entry.id] = client
        return client

    def local(self, entry: ModelEntry) -> TextGenerator:
        engine = self._local.get(entry.id)
        if engine is None:
            engine = self._new_local_engine(entry)
            self._local[entry.id] = engine
            engine.start()
        return engine

    def _new_transformers_engine(self, entry: ModelEntry) -> TextGenerator:
        return LocalEngine(
            entry.name,
            self._directory_resolver(entry),
            self._settings.engine,
            max_share=self._settings.tenancy.max_share,
        )

    def engine_gauges(self) -> list[EngineGauge]:
        """Each local engine's running and waiting requests per tenant (its share group)."""
        names = {entry.id: entry.name for entry in self._entries.values()}
        return [
            EngineGauge(names.get(entry_id, entry_id), group, load.running, load.waiting)
            for entry_id, engine in self._local.items()
            for group, load in engine.load_by_group().items()
        ]

    def _upstream(self, entry: ModelEntry) -> UpstreamClient:
        assert self._session is not None and entry.url is not None
        api_key = self._registry.upstream_api_key(entry)
        return UpstreamClient(self._session, entry.url, api_key=api_key)

    def local_engines(self) -> list[TextGenerator]:
        return list(self._local.values())

    def _directory_resolver(self, entry: ModelEntry) -> Callable[[], Path]:
        models_dir = self._settings.resolved_models_dir
        if entry.kind is ModelKind.BUILTIN:
            return lambda: ensure_builtin_model(models_dir)
        assert entry.path is not None
        path = Path(entry.path)
        return lambda: path

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        for engine in self._local.values():
            await engine.close()
        if self._session is not None:
            await self._session.close()
