"""The fleet call path's pure parts and its waiting line, with a fake monitor."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inhouse.config import Settings
from inhouse.engine.base import Share
from inhouse.errors import EngineUnavailableError, InvalidRequestError, RateLimitError
from inhouse.fleet.client import estimate_tokens, profile_of
from inhouse.fleet.dispatcher import Dispatcher
from inhouse.fleet.nodes import NodeKind, NodeLoad, NodeSnapshot, NodeSpec
from inhouse.protocol.hints import RouteHints, parse_priority_hint, parse_tier_hint
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest
from inhouse.protocol.types import Priority, Tier


def chat(*contents: str, **extra: Any) -> ChatCompletionRequest:
    messages = [{"role": "user", "content": text} for text in contents]
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, **extra})


def test_the_profile_reads_length_depth_tasks_and_hints() -> None:
    request = chat("hello there", "请帮我写一段Python代码解析CSV", max_tokens=300)
    profile = profile_of(request, priority=Priority.LOW, hints=RouteHints(tier=Tier.CENTER))
    assert profile.turns == 2
    assert profile.max_tokens == 300
    assert profile.tasks == {"code"}
    assert profile.tier_hint is Tier.CENTER and profile.priority is Priority.LOW
    # Chinese counts a token a character, English about four characters a token.
    assert profile.prompt_tokens == estimate_tokens("hello there") + estimate_tokens(
        "请帮我写一段Python代码解析CSV"
    )
    assert estimate_tokens("请帮我写一段") == 7 and estimate_tokens("a" * 400) == 101


def test_no_max_tokens_is_no_signal_and_flow_tasks_add_up() -> None:
    profile = profile_of(
        chat("Summarize this memo"),
        priority=Priority.NORMAL,
        hints=RouteHints(tasks=frozenset({"analysis"}), language="en"),
    )
    assert profile.max_tokens == 0
    assert profile.tasks == {"summarize", "analysis"} and profile.language == "en"
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "def f(x):"})
    assert profile_of(completion, priority=Priority.NORMAL, hints=RouteHints()).turns == 1


def test_hint_headers_are_validated() -> None:
    assert parse_tier_hint(None) is None and parse_tier_hint(" Edge ") is Tier.EDGE
    assert parse_priority_hint("low") is Priority.LOW
    with pytest.raises(InvalidRequestError) as tier:
        parse_tier_hint("moon")
    assert tier.value.param == "X-Inhouse-Tier"
    with pytest.raises(InvalidRequestError):
        parse_priority_hint("urgent")


class FakeMonitor:
    """Stands for the fleet monitor: the gateway's in-flight counts, no polling."""

    def __init__(self, *specs: NodeSpec) -> None:
        self.specs = {spec.id: spec for spec in specs}
        self.in_flight = dict.fromkeys(self.specs, 0)

    def snapshots(self) -> list[NodeSnapshot]:
        return [
            NodeSnapshot(s, NodeLoad(), True, self.in_flight[s.id]) for s in self.specs.values()
        ]

    def begin(self, node_id: str) -> None:
        self.in_flight[node_id] += 1

    def end(self, node_id: str) -> None:
        self.in_flight[node_id] -= 1


def node(node_id: str, capacity: int) -> NodeSpec:
    return NodeSpec(node_id, node_id, f"http://{node_id}/v1", Tier.EDGE, NodeKind.OPENAI,
                    {"m": "m"}, capacity=capacity)  # fmt: skip


def dispatcher(monitor: FakeMonitor, **fleet: Any) -> Dispatcher:
    settings = Settings.model_validate({"fleet": fleet})
    return Dispatcher(monitor, settings, asyncio.get_running_loop().time)  # type: ignore[arg-type]


async def place(d: Dispatcher, priority: Priority, model: str = "m") -> str:
    placement = await d.place(model=model, tier=Tier.EDGE, priority=priority, tenant_id="t",
                              needed_bytes=0, exclude=frozenset())  # fmt: skip
    return placement.node_id


def test_waiting_requests_get_a_freed_slot_high_priority_first() -> None:
    asyncio.run(_test_waiting_requests_get_a_freed_slot_high_priority_first())


async def _test_waiting_requests_get_a_freed_slot_high_priority_first() -> None:
    monitor = FakeMonitor(node("a", capacity=1))
    d = dispatcher(monitor)
    assert await place(d, Priority.HIGH) == "a"  # takes the only slot
    order: list[Priority] = []

    async def wait(priority: Priority) -> None:
        await place(d, priority)
        order.append(priority)

    normal = asyncio.create_task(wait(Priority.NORMAL))
    await asyncio.sleep(0.01)
    high = asyncio.create_task(wait(Priority.HIGH))
    await asyncio.sleep(0.01)
    assert order == []  # both wait
    monitor.end("a")
    d.released("m")
    await asyncio.wait_for(high, 1)
    assert order == [Priority.HIGH] and not normal.done()
    monitor.end("a")
    d.released("m")
    await asyncio.wait_for(normal, 1)
    assert order == [Priority.HIGH, Priority.NORMAL]


def test_waiting_requests_never_block_one_that_another_node_can_take() -> None:
    asyncio.run(_test_waiting_requests_never_block_one_that_another_node_can_take())


async def _test_waiting_requests_never_block_one_that_another_node_can_take() -> None:
    shared = node("shared", capacity=1)
    private = NodeSpec("own", "own", "http://own/v1", Tier.EDGE, NodeKind.OPENAI, {"m": "m"},
                       capacity=1, tenant_id="a")  # fmt: skip
    monitor = FakeMonitor(shared, private)
    d = dispatcher(monitor)
    first = await d.place(model="m", tier=Tier.EDGE, priority=Priority.HIGH, tenant_id="b",
                          needed_bytes=0, exclude=frozenset())  # fmt: skip
    assert first.node_id == "shared"
    waiting = asyncio.create_task(
        d.place(
            model="m",
            tier=Tier.EDGE,
            priority=Priority.HIGH,
            tenant_id="b",
            needed_bytes=0,
            exclude=frozenset(),
        )
    )
    await asyncio.sleep(0.01)
    assert not waiting.done()  # B waits for the shared node
    own = await asyncio.wait_for(
        d.place(
            model="m",
            tier=Tier.EDGE,
            priority=Priority.LOW,
            tenant_id="a",
            needed_bytes=0,
            exclude=frozenset(),
        ),
        0.1,
    )
    assert own.node_id == "own"  # A's idle node serves A at once, B's wait notwithstanding
    waiting.cancel()


def test_waiting_ends_with_429_and_no_node_is_503() -> None:
    asyncio.run(_test_waiting_ends_with_429_and_no_node_is_503())


async def _test_waiting_ends_with_429_and_no_node_is_503() -> None:
    monitor = FakeMonitor(node("a", capacity=1))
    d = dispatcher(monitor, queue_timeout_seconds=0.3)
    await place(d, Priority.HIGH)
    with pytest.raises(RateLimitError) as busy:
        await place(d, Priority.NORMAL)
    assert busy.value.code == "fleet_busy"
    with pytest.raises(EngineUnavailableError, match="no_node_serves_model"):
        await place(d, Priority.NORMAL, model="other")


def test_a_tenant_holds_at_most_its_share_of_node_slots_while_others_wait() -> None:
    asyncio.run(_test_a_tenant_holds_at_most_its_share_of_node_slots_while_others_wait())


async def _test_a_tenant_holds_at_most_its_share_of_node_slots_while_others_wait() -> None:
    monitor = FakeMonitor(node("a", capacity=5), node("b", capacity=5))
    d = dispatcher(monitor)  # the default share: 30% of 10 slots is 3

    async def ask(tenant: str) -> None:
        await d.place(
            model="m", tier=Tier.EDGE, priority=Priority.NORMAL, tenant_id=None,
            needed_bytes=0, exclude=frozenset(), share=Share(tenant),
        )  # fmt: skip

    async def x_finishes_one() -> dict[str, int]:
        monitor.end("a" if monitor.in_flight["a"] else "b")
        d.finished("m", Share("x"))
        d.released(["m"])
        await asyncio.sleep(0.01)
        return d.held("m")

    for _ in range(10):  # x alone takes every slot: nobody else waits
        await ask("x")
    assert d.held("m") == {"x": 10}
    waiting = [asyncio.create_task(ask(tenant)) for tenant in ("y", "y", "y", "y", "x")]
    await asyncio.sleep(0.01)
    # each slot x frees goes to y (fewer slots held) until y holds its share
    assert [await x_finishes_one() for _ in range(3)][-1] == {"x": 7, "y": 3}
    # then neither takes more while the other waits: x is above its share, y at it
    assert [await x_finishes_one() for _ in range(4)][-1] == {"x": 3, "y": 3}
    assert sum(task.done() for task in waiting) == 3
    # x below its share: its waiting request runs, and then y, alone in the line, too
    assert await x_finishes_one() == {"x": 3, "y": 4}
    assert all(task.done() for task in waiting)
