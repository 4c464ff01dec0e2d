"""The printed tables, the ratios of our policy to each baseline, and the article check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from _cluster.policies import Policy
from _cluster.report import (
    ARTICLE_COMPUTE_CUT,
    ARTICLE_CRITICAL_S,
    ARTICLE_LATENCY_CUT,
    ARTICLE_UTILISATION,
    Summary,
)

BASELINES = (Policy.ROUND_ROBIN, Policy.LEAST_LOADED, Policy.ALL_CENTER)


@dataclass(frozen=True, slots=True)
class LoadCheck:
    """Our policy against the article's figures at one load."""

    load: float
    latency_cut: float
    """1 - our mean end-to-end latency / all-center's."""
    all_center_demand: float
    """All-center's offered work over its capacity: above 1 it is overloaded, and its
    latency grows with the length of the trace."""
    compute_cut: float
    """1 - our center GPU-seconds / all-center's."""
    utilisation: float
    critical_ttft_p99: float
    critical_within_budget: float
    """Share of high-priority first tokens within 0.5 s."""
    critical_excess_p99: float
    """High-priority TTFT p99 less the idle-node floor (network, own prefill)."""

    @property
    def latency_reached(self) -> bool:
        return self.latency_cut >= ARTICLE_LATENCY_CUT

    @property
    def compute_reached(self) -> bool:
        return self.compute_cut >= ARTICLE_COMPUTE_CUT

    @property
    def utilisation_reached(self) -> bool:
        return (
            self.utilisation >= ARTICLE_UTILISATION and self.critical_ttft_p99 < ARTICLE_CRITICAL_S
        )


def find(summaries: Sequence[Summary], policy: Policy, load: float) -> Summary:
    return next(s for s in summaries if s.policy is policy and s.load == load)


def loads_of(summaries: Sequence[Summary]) -> list[float]:
    return sorted({s.load for s in summaries})


def article_checks(summaries: Sequence[Summary]) -> list[LoadCheck]:
    checks = []
    for load in loads_of(summaries):
        ours = find(summaries, Policy.OURS, load)
        center = find(summaries, Policy.ALL_CENTER, load)
        checks.append(
            LoadCheck(
                load=load,
                latency_cut=1 - ours.e2e.all.mean / center.e2e.all.mean,
                all_center_demand=center.demand_center,
                compute_cut=1 - ours.center_gpu_s / center.center_gpu_s,
                utilisation=ours.util_fleet,
                critical_ttft_p99=ours.ttft.high.p99,
                critical_within_budget=ours.high_within_budget,
                critical_excess_p99=ours.ttft_excess.high.p99,
            )
        )
    return checks


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _yes(reached: bool) -> str:
    return "yes" if reached else "no"


def _s(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def print_tables(console: Console, summaries: Sequence[Summary]) -> None:
    resources = Table(
        title="Resources: utilisation = work done / full-batch capacity; slots = occupied "
        "batch slots; busy = time with any sequence"
    )
    for column in (
        "load", "policy", "req/s", "util C", "util E", "slots C", "slots E", "busy C",
        "busy E", "edge share", "complex@edge", "center GPU-s", "saved", "wait p99 s",
    ):  # fmt: skip
        resources.add_column(column, justify="left" if column == "policy" else "right")
    latency = Table(title="Latency, seconds: end to end p50 / p99, time to first token p99")
    for column in (
        "load", "policy", "e2e high", "e2e normal", "e2e low", "e2e all (mean)",
        "ttft p99 high", "ttft p99 normal", "ttft p99 low", "excess p99 high",
        "wait p99 high/normal/low",
    ):  # fmt: skip
        latency.add_column(column, justify="left" if column == "policy" else "right")
    for load in loads_of(summaries):
        all_center = find(summaries, Policy.ALL_CENTER, load)
        for policy in Policy:
            s = find(summaries, policy, load)
            saved = 1 - s.center_gpu_s / all_center.center_gpu_s
            resources.add_row(
                _pct(load), policy.value, f"{s.rate:.1f}", _pct(s.util_center),
                _pct(s.util_edge), _pct(s.slots_center), _pct(s.slots_edge),
                _pct(s.busy_center), _pct(s.busy_edge), _pct(s.edge_share),
                _pct(s.complex_at_edge), f"{s.center_gpu_s:,.0f}", _pct(saved),
                _s(s.wait.all.p99),
            )  # fmt: skip
            latency.add_row(
                _pct(load), policy.value,
                *(f"{_s(st.p50)} / {_s(st.p99)}" for st in (s.e2e.high, s.e2e.normal, s.e2e.low)),
                f"{_s(s.e2e.all.p50)} / {_s(s.e2e.all.p99)} ({_s(s.e2e.all.mean)})",
                *(_s(st.p99) for st in (s.ttft.high, s.ttft.normal, s.ttft.low)),
                _s(s.ttft_excess.high.p99),
                " / ".join(_s(st.p99) for st in (s.wait.high, s.wait.normal, s.wait.low)),
            )  # fmt: skip
        resources.add_section()
        latency.add_section()
    console.print(resources)
    console.print(latency)
    ratios = Table(title="Ours / baseline in the same run (below 1: ours is lower)")
    for column in ("load", "baseline", "e2e mean", "e2e p99", "ttft p99 high", "center GPU-s"):
        ratios.add_column(column, justify="left" if column == "baseline" else "right")
    for load in loads_of(summaries):
        ours = find(summaries, Policy.OURS, load)
        for baseline in BASELINES:
            b = find(summaries, baseline, load)
            ratios.add_row(
                _pct(load), baseline.value, f"{ours.e2e.all.mean / b.e2e.all.mean:.2f}",
                f"{ours.e2e.all.p99 / b.e2e.all.p99:.2f}",
                f"{ours.ttft.high.p99 / b.ttft.high.p99:.2f}",
                f"{ours.center_gpu_s / b.center_gpu_s:.2f}",
            )  # fmt: skip
        ratios.add_section()
    console.print(ratios)


def print_article_check(console: Console, checks: Sequence[LoadCheck]) -> None:
    table = Table(title="The article's figures, our policy against all-center")
    for column in (
        "load", "latency cut (>=67%)", "all-center demand", "compute cut (>=35%)",
        "utilisation (>=85%)", "high ttft p99 (<0.5 s)", "high within 0.5 s",
        "high ttft excess p99",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for c in checks:
        table.add_row(
            _pct(c.load),
            f"{_pct(c.latency_cut)} {_yes(c.latency_reached)}",
            f"{c.all_center_demand:.2f}" + (" overloaded" if c.all_center_demand > 1 else ""),
            f"{_pct(c.compute_cut)} {_yes(c.compute_reached)}",
            f"{_pct(c.utilisation)} {_yes(c.utilisation >= ARTICLE_UTILISATION)}",
            f"{c.critical_ttft_p99:.3f} {_yes(c.critical_ttft_p99 < ARTICLE_CRITICAL_S)}",
            f"{100 * c.critical_within_budget:.1f}%",
            f"{c.critical_excess_p99:.3f}",
        )
    console.print(table)
    for claim, loads in (
        ("67% lower latency", [c.load for c in checks if c.latency_reached]),
        (
            "67% lower latency, all-center not overloaded",
            [c.load for c in checks if c.latency_reached and c.all_center_demand <= 1],
        ),
        ("35% less central compute", [c.load for c in checks if c.compute_reached]),
        (
            "85%+ utilisation with high-priority TTFT p99 < 500 ms",
            [c.load for c in checks if c.utilisation_reached],
        ),
    ):
        where = ", ".join(_pct(load) for load in loads) if loads else "no load"
        console.print(f"  {claim}: reached at {where}")
