"""The request pipeline on a fake engine: answers, usage recorded exactly once,
metrics, streams abandoned midway, errors before anything is generated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from inhouse.config import Settings
from inhouse.engine.fake import FakeEngine
from inhouse.errors import NotFoundError, RateLimitError
from inhouse.gateway.admission import Admission, estimate_tokens
from inhouse.gateway.context import Endpoint
from inhouse.gateway.engines import EnginePool
from inhouse.gateway.pipeline import Pipeline
from inhouse.gateway.recording import Recording
from inhouse.monitor.metrics import GatewayMetrics
from inhouse.protocol.openai import ChatCompletionRequest
from inhouse.protocol.replies import JsonReply, Reply, StreamReply
from inhouse.registry.models import ModelRegistry
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.store.tables import UsageRow
from inhouse.tenancy.admission import LocalLimiter
from inhouse.tenancy.metering import UsageRecorder
from inhouse.tenancy.models import Principal, Role
from inhouse.tenancy.quotas import LimitsCache, QuotaService
from inhouse.tenancy.service import TenantService
from tests.keyrings import audit_for, keyring_for

PRINCIPAL = Principal(tenant_id="ten_a", tenant_name="a", key_id="key_a", role=Role.DEVELOPER)
MESSAGE = "one two three four five six"


def chat(**fields: object) -> ChatCompletionRequest:
    body = {"model": "echo", "messages": [{"role": "user", "content": MESSAGE}], **fields}
    return ChatCompletionRequest.model_validate(body)


class Harness:
    def __init__(self, tmp_path: Path, engine: FakeEngine) -> None:
        settings = Settings(data_dir=tmp_path, builtin_model=False)
        self.db = Database(f"sqlite:///{tmp_path / 'g.db'}")
        upgrade_to_head(self.db.engine)
        registry = ModelRegistry(self.db, keyring_for(self.db), audit_for(self.db))
        weights = tmp_path / "weights"
        weights.mkdir()
        (weights / "config.json").write_text("{}")
        registry.add_local("echo", weights, actor="test")
        self.engines = EnginePool(registry, settings, local_engine=lambda _entry: engine)
        self.recorder = UsageRecorder(self.db, settings.metering)
        self.metrics = GatewayMetrics()
        self.quotas = QuotaService(self.db, audit_for(self.db))
        limits = LimitsCache(self.quotas, ttl_seconds=0.0)
        self.admission = Admission(limits, LocalLimiter(), settings)
        recording = Recording(self.recorder, self.metrics, self.admission)
        self.pipeline = Pipeline(self.engines, recording, self.admission, settings.tenancy)

    async def chat(self, principal: Principal, request: ChatCompletionRequest) -> Reply:
        return await self.pipeline.handle(principal, request, Endpoint.CHAT)

    def tenant_with_quota(self, **quota: object) -> Principal:
        tenants = TenantService(self.db, ApiKeyHasher(b"k" * 32), audit_for(self.db))
        tenant = tenants.create_tenant("acme", actor="test")
        key, _ = tenants.create_key("acme", Role.DEVELOPER, actor="test")
        self.quotas.update("acme", quota, actor="test")
        return Principal(tenant.id, "acme", key.id, Role.DEVELOPER)

    async def __aenter__(self) -> Harness:
        await self.engines.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.engines.close()
        await self.recorder.close()

    def usage(self) -> list[tuple[int, int, int]]:
        with self.db.session() as session:
            rows = session.scalars(select(UsageRow).order_by(UsageRow.id)).all()
            return [(r.status_code, r.prompt_tokens, r.completion_tokens) for r in rows]

    def in_flight(self) -> float:
        return float(self.metrics.registry.get_sample_value("inhouse_requests_in_flight") or 0)


async def drain(events: AsyncIterator[bytes]) -> list[bytes]:
    return [event async for event in events]


def test_a_whole_answer_is_recorded_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Harness(tmp_path, FakeEngine("echo")) as h:
            reply = await h.chat(PRINCIPAL, chat(max_tokens=4))
            assert isinstance(reply, JsonReply)
            body = orjson.loads(reply.body)
            assert body["choices"][0]["message"]["content"] == "one two three four "
            assert body["choices"][0]["finish_reason"] == "length"
            assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}
            assert h.in_flight() == 0
            await h.recorder.flush()
            assert h.usage() == [(200, 6, 4)]

    asyncio.run(scenario())


def test_an_abandoned_stream_pays_for_what_it_received(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Harness(tmp_path, FakeEngine("echo")) as h:
            reply = await h.chat(PRINCIPAL, chat(stream=True))
            assert isinstance(reply, StreamReply)
            events = reply.events
            for _ in range(4):  # the role chunk, then three words
                await anext(events)
            await events.aclose()  # the client goes away
            assert h.in_flight() == 0
            await h.recorder.flush()
            assert h.usage() == [(499, 6, 3)]

    asyncio.run(scenario())


def test_a_finished_stream_ends_with_usage_and_done(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Harness(tmp_path, FakeEngine("echo")) as h:
            reply = await h.chat(
                PRINCIPAL, chat(stream=True, stream_options={"include_usage": True}, stop=["four"])
            )
            assert isinstance(reply, StreamReply)
            events = await drain(reply.events)
            assert events[-1] == b"data: [DONE]\n\n"
            usage = orjson.loads(events[-2][len(b"data: ") :])["usage"]
            assert usage["completion_tokens"] == 4
            text = "".join(
                orjson.loads(e[len(b"data: ") :])["choices"][0]["delta"].get("content", "")
                for e in events[:-2]
            )
            assert text == "one two three "
            await h.recorder.flush()
            assert h.usage() == [(200, 6, 4)]

    asyncio.run(scenario())


def test_refusals_raise_before_anything_is_sent_and_bill_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Harness(tmp_path, FakeEngine("echo", capacity=0)) as h:
            with pytest.raises(NotFoundError):
                await h.chat(PRINCIPAL, chat(model="missing"))
            with pytest.raises(RateLimitError):
                await h.chat(PRINCIPAL, chat(stream=True))
            assert h.in_flight() == 0
            await h.recorder.flush()
            assert h.usage() == [(429, 0, 0)]
            sample = h.metrics.registry.get_sample_value(
                "inhouse_requests_total",
                {"endpoint": "chat.completions", "model": "-", "status": "404"},
            )
            assert sample == 1

    asyncio.run(scenario())


def test_an_abandoned_stream_frees_its_slot_and_pays_only_what_it_received(
    tmp_path: Path,
) -> None:
    stream = chat(stream=True, max_tokens=6)
    budget = estimate_tokens(stream, 0) + 100
    # A follow-up whose reservation fits only if the stream gave back what it did not use.
    follow_up = next(
        request
        for request in (chat(max_tokens=m) for m in range(1, 1000))
        if estimate_tokens(request, 0) in (budget - 8, budget - 9)
    )

    async def scenario() -> None:
        async with Harness(tmp_path, FakeEngine("echo")) as h:
            acme = h.tenant_with_quota(concurrency=1, tokens_per_day=budget)
            reply = await h.chat(acme, stream)
            assert isinstance(reply, StreamReply)
            with pytest.raises(RateLimitError, match="concurrency"):
                await h.chat(acme, chat(max_tokens=1))
            events = reply.events
            for _ in range(3):  # the role chunk, then two words
                await anext(events)
            await events.aclose()  # the client goes away: 6 + 2 tokens are settled
            assert isinstance(await h.chat(acme, follow_up), JsonReply)
            with pytest.raises(RateLimitError, match="tokens_per_day"):
                await h.chat(acme, follow_up)
            await h.recorder.flush()
            assert h.usage() == [(499, 6, 2), (200, 6, 6)]

    asyncio.run(scenario())


def test_a_request_the_engine_refuses_releases_its_reservation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Harness(tmp_path, FakeEngine("echo", capacity=0)) as h:
            acme = h.tenant_with_quota(concurrency=1, requests_per_minute=100)
            for _ in range(3):  # the engine's 429, never the concurrency quota's
                with pytest.raises(RateLimitError, match="at capacity"):
                    await h.chat(acme, chat())

    asyncio.run(scenario())
