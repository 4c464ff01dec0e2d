"""Soak test of ``inhouse node``: does the engine's memory stay flat under sustained load?

Starts ``inhouse node`` (``--dtype float32`` by default) on loopback and runs ``--concurrency``
(16) closed-loop streaming clients: each request picks one of the engine benchmark's prompts and
a ``max_tokens`` between 16 and 256 at random (seeded). After a ``--warmup`` (30 s) the load
goes on for ``--minutes`` (10); every 5 s the node's RSS (``VmRSS`` of its process tree, from
``/proc/<pid>/status``) is sampled. The allocator may still be filling its caches after 30 s
(the float32 node's RSS levelled off after about 2.5 minutes here): when the growth is near the
bound, look at the samples in ``--json`` or rerun with ``--warmup 180``. No request starts after
the deadline, each one is bounded by ``--request-timeout``, and the node is killed when the test
ends, however it ends.

Printed: requests done, errors, generated tokens/s after the warm-up, RSS at the start (the first
sample after the warm-up), the highest RSS, RSS at the end, and the growth from the first to the
last minute (median of each minute's samples; of each third of the run when it is shorter). It
passes (exit 0) when that growth stays below ``--max-growth-mib`` (64 MiB), printed beside it;
exit 1 when it does not, when the node dies or when no request succeeds.

Run it with the project's virtual environment::

    .venv/bin/python bench/engine_soak.py                      # float32, 10 minutes
    .venv/bin/python bench/engine_soak.py --dtype int8 --minutes 3 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engine import mem
from _engine import node as nd
from _engine.load import Outcome, run_clients
from _engine.workload import QUESTIONS, chat_body
from _gateway.procs import Children, supervised, tail

DTYPES = ("float32", "int8", "bfloat16")
MIB = 1024 * 1024
SAMPLE_S = 5.0
MIN_TOKENS, MAX_TOKENS = 16, 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Soak test: inhouse node memory under load.")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes of load")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    parser.add_argument("--max-growth-mib", type=float, default=64.0, help="pass bound")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds each")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not 0.1 <= args.minutes <= 24 * 60 or not 1 <= args.concurrency <= 256:
        parser.error("--minutes: 0.1..1440; --concurrency: 1..256")
    if not 0 <= args.warmup <= 3600:
        parser.error("--warmup: 0..3600 seconds")
    return args


@dataclass
class Sample:
    """One RSS sample: seconds since the load started, bytes, requests and tokens so far."""

    t: float
    rss: int
    done: int
    tokens: int


@dataclass
class Soak:
    started: float
    warm_until: float
    deadline: float
    samples: list[Sample] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    node_died: str | None = None


def make_bodies(soak: Soak, clients: int, seed: int) -> Any:
    rngs = [random.Random(seed * 1000 + i) for i in range(clients)]

    def body_for(client: int, turn: int) -> dict[str, Any] | None:
        if time.monotonic() >= soak.deadline:
            return None
        rng = rngs[client]
        prompt = rng.randrange(len(QUESTIONS))
        return chat_body(prompt, rng.randint(MIN_TOKENS, MAX_TOKENS))

    return body_for


async def sample_rss(soak: Soak, node: nd.Node) -> None:
    """Every 5 s until the deadline: the node's RSS and the progress so far."""
    next_minute = 60.0
    while time.monotonic() < soak.deadline:
        await asyncio.sleep(SAMPLE_S)
        if node.proc.poll() is not None:
            soak.node_died = f"the node exited with code {node.proc.returncode}"
            soak.deadline = time.monotonic()  # stop the clients: nothing left to measure
            return
        rss = mem.tree_bytes(node.proc.pid, "VmRSS")
        done = [o for o in list(soak.outcomes) if o.error is None]
        t = time.monotonic() - soak.started
        if rss is not None:
            soak.samples.append(Sample(t, rss, len(done), sum(o.tokens for o in done)))
        if t >= next_minute:
            next_minute += 60.0
            errors = len(soak.outcomes) - len(done)
            print(
                f"  {t / 60:5.1f} min  {len(done):6d} requests  {errors} errors"
                f"  RSS {_mib(rss)} MiB",
                flush=True,
            )


async def soak_load(soak: Soak, node: nd.Node, args: argparse.Namespace) -> None:
    body_for = make_bodies(soak, args.concurrency, args.seed)
    load = run_clients(
        node.base_url, node.token, body_for, args.concurrency, args.request_timeout, soak.outcomes
    )
    hard_limit = soak.deadline - time.monotonic() + args.request_timeout + 30
    async with asyncio.timeout(hard_limit):
        await asyncio.gather(load, sample_rss(soak, node))


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def window_median(samples: list[Sample], start: float, end: float) -> float | None:
    values = [s.rss for s in samples if start <= s.t <= end]
    return statistics.median(values) if values else None


def report(soak: Soak, args: argparse.Namespace) -> dict[str, Any]:
    warm = soak.warm_until - soak.started
    after = [s for s in soak.samples if s.t >= warm]
    ok = [o for o in soak.outcomes if o.error is None]
    first_min = last_min = None
    if after:
        # A minute each, or a third of the run when it is shorter, so the two never overlap.
        window = min(60.0, (after[-1].t - warm) / 3.0)
        first_min = window_median(after, warm, warm + window)
        last_min = window_median(after, after[-1].t - window, after[-1].t)
    growth = last_min - first_min if first_min is not None and last_min is not None else None
    tokens_per_s = None
    if len(after) >= 2 and after[-1].t > after[0].t:
        tokens_per_s = (after[-1].tokens - after[0].tokens) / (after[-1].t - after[0].t)
    return {
        "dtype": args.dtype,
        "minutes": args.minutes,
        "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "requests_done": len(ok),
        "errors": len(soak.outcomes) - len(ok),
        "error_samples": sorted({o.error for o in soak.outcomes if o.error})[:3],
        "tokens_per_s": round(tokens_per_s, 2) if tokens_per_s is not None else None,
        "rss_start_bytes": after[0].rss if after else None,
        "rss_max_bytes": max((s.rss for s in after), default=None),
        "rss_end_bytes": after[-1].rss if after else None,
        "growth_first_to_last_minute_bytes": growth,
        "max_growth_bytes": args.max_growth_mib * MIB,
        "node_died": soak.node_died,
        "samples": [[round(s.t, 1), s.rss] for s in soak.samples],
    }


def verdict(result: dict[str, Any]) -> str | None:
    """Why the soak test failed, or None when it passed."""
    if result["node_died"]:
        return str(result["node_died"])
    if not result["requests_done"]:
        return "no request succeeded"
    growth = result["growth_first_to_last_minute_bytes"]
    if growth is None:
        return "no RSS samples after the warm-up"
    if growth >= result["max_growth_bytes"]:
        return f"RSS grew by {_mib(growth)} MiB"
    return None


def print_report(result: dict[str, Any]) -> None:
    growth = result["growth_first_to_last_minute_bytes"]
    tokens_per_s = result["tokens_per_s"]
    lines = [
        ("requests done", str(result["requests_done"])),
        ("errors", f"{result['errors']} {result['error_samples'][:1] or ''}".strip()),
        ("tokens/s", "-" if tokens_per_s is None else f"{tokens_per_s:.1f}"),
        ("RSS at start", f"{_mib(result['rss_start_bytes'])} MiB (after {result['warmup_s']:g} s)"),
        ("max RSS", f"{_mib(result['rss_max_bytes'])} MiB"),
        ("RSS at end", f"{_mib(result['rss_end_bytes'])} MiB"),
        (
            "growth, first to last minute",
            f"{_mib(growth)} MiB (bound {result['max_growth_bytes'] / MIB:.0f} MiB)",
        ),
    ]
    for label, value in lines:
        print(f"{label:<30} {value}")


def run(args: argparse.Namespace, children: Children, workdir: Path) -> dict[str, Any]:
    print(f"starting inhouse node --dtype {args.dtype} ...", flush=True)
    node = nd.start_node(children, args.dtype, workdir)
    now = time.monotonic()
    soak = Soak(now, now + args.warmup, now + args.warmup + args.minutes * 60.0)
    print(
        f"{args.concurrency} clients for {args.warmup:g} s of warm-up + {args.minutes:g} min",
        flush=True,
    )
    try:
        asyncio.run(soak_load(soak, node, args))
    except TimeoutError:
        soak.node_died = soak.node_died or "the load did not finish in time"
    if soak.node_died:
        print(tail(node.log), file=sys.stderr)
    return report(soak, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with supervised("inhouse-soak-") as (children, scratch):
            result = run(args, children, scratch)
    except nd.NodeError as exc:
        print(f"soak test could not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print()
    print_report(result)
    why = verdict(result)
    print("PASS" if why is None else f"FAIL: {why}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main())
