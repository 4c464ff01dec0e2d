"""Cluster simulation: our edge/center routing and scheduling against simple baselines.

A discrete-event simulation of a fleet (by default 8 center nodes with a 70B model and 20
edge nodes with an 8B model) under one generated trace of mixed priorities (10% high, 70%
normal, 20% low) and complexities (``_cluster/workload.py``), at several offered loads
(fractions of what the fleet serves with every node at full batch). Nodes batch up to
their capacity, with steps of ``a + b x batch`` seconds and chunked prefill
(``_cluster/node.py``); step costs and where they come from are in ``_cluster/fleet.py``,
and the run prints which of them are assumptions.

Policies (``_cluster/policies.py``): **ours** (``inhouse.fleet.router.route``, then
``inhouse.fleet.scheduler.schedule``, waiting in ``inhouse.fleet.dispatch_queue`` when the
fleet is full for the priority), **round_robin** and **least_loaded** over every node
(tiers and priorities ignored), and **all_center** (least-loaded over the center nodes
only: the fleet before the edge), against which central compute saved is counted.

    .venv/bin/python bench/cluster_sim.py                 # about a minute
    .venv/bin/python bench/cluster_sim.py --quick         # a few seconds
    .venv/bin/python bench/cluster_sim.py --fleet fast-edge --loads 0.3,0.7

Deterministic for a given ``--seed``: every policy and load sees the same requests.
Writes ``results.json`` and three PNG plots under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console

from _cluster.fleet import PROFILES, FleetProfile
from _cluster.plots import plot_all
from _cluster.policies import Policy
from _cluster.report import Summary, summarize
from _cluster.sim import SimConfig, capacity_rate, simulate
from _cluster.tables import LoadCheck, article_checks, print_article_check, print_tables
from _cluster.workload import generate

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cluster_sim"
DEFAULT_LOADS = (0.3, 0.5, 0.7, 0.85, 0.95)
DEFAULT_REQUESTS = 40_000
QUICK_LOADS = (0.5, 0.85)
QUICK_REQUESTS = 2_000


@dataclass(frozen=True, slots=True)
class Result:
    fleet: FleetProfile
    seed: int
    requests: int
    capacity_rate: float
    """Requests per second at 100% load."""
    summaries: tuple[Summary, ...]
    checks: tuple[LoadCheck, ...]
    seconds: float
    """Wall-clock time of the simulation."""


def run_grid(
    *,
    seed: int,
    requests: int,
    loads: Sequence[float],
    fleet: FleetProfile,
    policies: Sequence[Policy] = tuple(Policy),
) -> Result:
    """Every policy at every load on one trace; ``policies`` must include ours and
    all-center (the article check compares them)."""
    started = time.perf_counter()
    trace = generate(requests, seed)
    config = SimConfig(fleet)
    capacity = capacity_rate(trace, fleet)
    summaries = tuple(
        summarize(simulate(trace, policy, load, config, load * capacity))
        for load in loads
        for policy in policies
    )
    return Result(
        fleet=fleet,
        seed=seed,
        requests=requests,
        capacity_rate=capacity,
        summaries=summaries,
        checks=tuple(article_checks(summaries)),
        seconds=time.perf_counter() - started,
    )


def write_json(result: Result, path: Path) -> None:
    data = {
        "fleet": dataclasses.asdict(result.fleet),
        "seed": result.seed,
        "requests": result.requests,
        "capacity_rate": result.capacity_rate,
        "summaries": [dataclasses.asdict(s) for s in result.summaries],
        "article_checks": [dataclasses.asdict(c) for c in result.checks],
        "seconds": result.seconds,
    }
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def _loads(text: str) -> tuple[float, ...]:
    loads = tuple(float(part) for part in text.split(",") if part.strip())
    if not loads or not all(0 < load < 2 for load in loads):
        raise argparse.ArgumentTypeError("loads are fractions of capacity, e.g. 0.3,0.5,0.95")
    return loads


def main(argv: Sequence[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--requests", type=int, help=f"default {DEFAULT_REQUESTS:,}")
    parser.add_argument("--loads", type=_loads, help="e.g. 0.3,0.5,0.7,0.85,0.95")
    parser.add_argument("--fleet", choices=sorted(PROFILES), default="gpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="a small run, for a smoke test")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    requests = args.requests or (QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    loads = args.loads or (QUICK_LOADS if args.quick else DEFAULT_LOADS)
    fleet = PROFILES[args.fleet]

    console = Console(width=200)
    console.print(
        f"[bold]Cluster simulation[/bold]: fleet {fleet.name} ({fleet.center_nodes} center "
        f"nodes, {fleet.center.model} on {fleet.center.hardware}; {fleet.edge_nodes} edge "
        f"nodes, {fleet.edge.model} on {fleet.edge.hardware}), {requests:,} requests, "
        f"seed {args.seed}"
    )
    console.print("Where the numbers come from:")
    for note in fleet.notes:
        console.print(f"  - {note}")
    result = run_grid(seed=args.seed, requests=requests, loads=loads, fleet=fleet)
    console.print(
        f"100% load = {result.capacity_rate:.1f} requests/s (every node at full batch); "
        f"simulated in {result.seconds:.1f} s"
    )
    print_tables(console, result.summaries)
    print_article_check(console, result.checks)

    args.out.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out / "results.json")
    written = [args.out / "results.json"]
    if not args.no_plots:
        written += plot_all(result.summaries, args.out, f"fleet {fleet.name}, seed {args.seed}")
    console.print("Wrote " + ", ".join(str(path) for path in written))
    return result


if __name__ == "__main__":
    main()
