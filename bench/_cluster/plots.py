"""The PNG plots of a run: matplotlib figures drawn without pyplot (no display, no global
state), saved with the Agg canvas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from _cluster.policies import Policy
from _cluster.report import Summary
from _cluster.tables import find, loads_of
from inhouse.protocol.types import Priority

STYLE = {
    Policy.OURS: ("tab:blue", "o"),
    Policy.ROUND_ROBIN: ("tab:orange", "s"),
    Policy.LEAST_LOADED: ("tab:green", "^"),
    Policy.ALL_CENTER: ("tab:red", "x"),
}
BASE_AND_OURS = (Policy.OURS, Policy.ROUND_ROBIN, Policy.LEAST_LOADED)


def _lines(
    axes: Axes,
    summaries: Sequence[Summary],
    value: Callable[[Summary], float],
    policies: Sequence[Policy] = tuple(Policy),
) -> None:
    loads = loads_of(summaries)
    for policy in policies:
        colour, marker = STYLE[policy]
        ys = [value(find(summaries, policy, load)) for load in loads]
        axes.plot([100 * x for x in loads], ys, color=colour, marker=marker, label=policy.value)
    axes.set_xlabel("offered load, % of fleet capacity")
    axes.grid(alpha=0.3)


def _p99(priority: Priority, *, ttft: bool) -> Callable[[Summary], float]:
    def value(summary: Summary) -> float:
        return (summary.ttft if ttft else summary.e2e).of(priority).p99

    return value


def plot_all(summaries: Sequence[Summary], out: Path, title: str) -> list[Path]:
    """Write the three plots under ``out``; returns their paths."""
    paths = []
    fig = Figure(figsize=(12, 6.4))
    grid = fig.subplots(2, 3, sharex=True)
    for column, priority in enumerate(Priority):
        name = priority.name.lower()
        top, bottom = grid[0][column], grid[1][column]
        _lines(top, summaries, _p99(priority, ttft=False))
        top.set_title(f"{name}: end-to-end p99")
        _lines(bottom, summaries, _p99(priority, ttft=True))
        bottom.set_title(f"{name}: time to first token p99")
        for axes in (top, bottom):
            axes.set_yscale("log")
            axes.set_ylabel("seconds")
        if priority is Priority.HIGH:
            bottom.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    grid[0][0].legend(fontsize=8)
    fig.suptitle(f"Latency p99 per priority ({title})")
    paths.append(_save(fig, out / "cluster_sim_latency.png"))

    fig = Figure(figsize=(10, 3.8))
    center, edge = fig.subplots(1, 2, sharey=True)
    _lines(center, summaries, lambda s: 100 * s.util_center)
    center.set_title("center nodes")
    _lines(edge, summaries, lambda s: 100 * s.util_edge, policies=BASE_AND_OURS)
    edge.set_title("edge nodes")
    center.set_ylabel("utilisation, % of full-batch capacity")
    for axes in (center, edge):
        axes.axhline(85, color="grey", linestyle="--", linewidth=1)
    center.legend(fontsize=8)
    fig.suptitle(f"Utilisation ({title})")
    paths.append(_save(fig, out / "cluster_sim_utilisation.png"))

    fig = Figure(figsize=(13, 3.8))
    share, complex_share, saved = fig.subplots(1, 3)
    _lines(share, summaries, lambda s: 100 * s.edge_share)
    share.set_title("requests served at the edge")
    share.set_ylabel("%")
    share.legend(fontsize=8)
    _lines(complex_share, summaries, lambda s: 100 * s.complex_at_edge, policies=BASE_AND_OURS)
    complex_share.set_title("complex requests (router: center) served at the edge")
    complex_share.set_ylabel("%")

    def cut(s: Summary) -> float:
        return 100 * (1 - s.center_gpu_s / find(summaries, Policy.ALL_CENTER, s.load).center_gpu_s)

    _lines(saved, summaries, cut, policies=BASE_AND_OURS)
    saved.axhline(35, color="grey", linestyle="--", linewidth=1)
    saved.set_title("center GPU-seconds saved vs all-center")
    saved.set_ylabel("%")
    fig.suptitle(f"Edge share and central compute ({title})")
    paths.append(_save(fig, out / "cluster_sim_edge.png"))
    return paths


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path
