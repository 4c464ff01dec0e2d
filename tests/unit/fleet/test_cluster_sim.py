"""The cluster simulation's quick mode, run in-process: conservation, sane measures, the
real router and scheduler at work, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.cluster_sim import QUICK_REQUESTS, main, run_grid

from inhouse.protocol.types import Tier

# bench/cluster_sim.py puts bench/ on the path for its helper package.
from _cluster.fleet import GPU_FLEET  # isort: skip
from _cluster.policies import Policy  # isort: skip
from _cluster.sim import SimConfig, capacity_rate, simulate  # isort: skip
from _cluster.workload import generate  # isort: skip


def test_quick_mode_measures_what_it_claims(tmp_path: Path) -> None:
    result = main(["--quick", "--out", str(tmp_path), "--seed", "3"])
    assert {s.policy for s in result.summaries} == set(Policy)
    for s in result.summaries:
        assert s.completed == QUICK_REQUESTS, s.policy  # every request finished once
        assert s.rejected == 0
        for stats in (s.e2e, s.ttft):
            for stat in (stats.high, stats.normal, stats.low, stats.all):
                assert 0 < stat.p50 <= stat.p99
        assert s.ttft.all.p99 <= s.e2e.all.p99
        assert s.wait.all.p50 >= 0
        for share in (
            s.util_center, s.util_edge, s.util_fleet, s.slots_center, s.slots_edge,
            s.busy_center, s.busy_edge, s.edge_share, s.complex_at_edge, s.fell_back,
        ):  # fmt: skip
            assert -1e-9 <= share <= 1 + 1e-9, s.policy
    for load in {s.load for s in result.summaries}:
        ours, center, robin = (
            next(s for s in result.summaries if s.policy is p and s.load == load)
            for p in (Policy.OURS, Policy.ALL_CENTER, Policy.ROUND_ROBIN)
        )
        assert ours.edge_share > 0.3
        assert center.edge_share == 0.0 and center.util_edge == 0.0
        assert ours.center_gpu_s < center.center_gpu_s
        # the router keeps complex requests at the center; round-robin does not
        assert ours.complex_at_edge < 0.5 < robin.complex_at_edge
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["summaries"]) == len(result.summaries)
    for name in ("latency", "utilisation", "edge"):
        png = tmp_path / f"cluster_sim_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("policy", list(Policy))
def test_every_job_is_served_exactly_once_within_node_limits(policy: Policy) -> None:
    trace = generate(600, seed=11)
    config = SimConfig(GPU_FLEET)
    run = simulate(trace, policy, 0.9, config, 0.9 * capacity_rate(trace, GPU_FLEET))
    assert all(job.completions == 1 for job in run.jobs)
    for job in run.jobs:
        arrival = job.request.at / run.rate
        assert arrival <= job.admitted <= job.first_token <= job.finished <= run.end
        assert job.node is not None
    for node in run.nodes:
        assert node.running == 0 and node.memory_used == 0 and not node.local
        assert node.peak_running <= node.kind.capacity
        assert node.peak_memory <= node.kind.kv_memory_bytes
    tiers = {job.node.spec.tier for job in run.jobs if job.node is not None}
    assert tiers == ({Tier.CENTER} if policy is Policy.ALL_CENTER else {Tier.CENTER, Tier.EDGE})


def test_the_same_seed_gives_the_same_numbers() -> None:
    def once(seed: int) -> tuple[object, ...]:
        return run_grid(seed=seed, requests=400, loads=(0.8,), fleet=GPU_FLEET).summaries

    assert once(5) == once(5)
    assert once(5) != once(6)
