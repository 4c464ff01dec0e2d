"""Gateway benchmark: what inhouse's OpenAI-compatible pass-through costs, next to LiteLLM's.

One run starts a very fast fake OpenAI upstream on loopback (its own process, a bare asyncio
HTTP/1.1 server with keep-alive) and sends the same closed-loop load to

- ``direct``:  the upstream itself, the floor every gateway adds to;
- ``inhouse``: ``inhouse serve`` in front of it (authentication and metering on, built-in model
  off), on a throw-away data dir with one tenant, one key and the upstream as model ``fake``;
- ``litellm``: the LiteLLM proxy in front of it (one worker, no database, master key), installed
  on first use into ``bench/.venv-litellm``;
- ``quotas``: ``inhouse`` with every quota of the tenant set (tokens per day and month, RPM,
  TPM, concurrency; none reached), counted in-process;
- ``redis``: the same quotas counted in Redis (``--redis-url``), as gateway replicas share them;
- ``noaudit``: ``inhouse`` without the per-request audit entry (hash-chained, details sealed
  with SM4-GCM), to show what that entry costs; ``aes``: the entry sealed with AES-256-GCM.

For each target, mode (``json``: non-streaming, ``stream``: SSE with a usage chunk) and
concurrency (1, 16, 64 by default), a separate load-generator process (aiohttp, one keep-alive
pool of ``concurrency`` connections) warms up briefly, then loops requests for ``--seconds``.
Latency is per request; for streaming it is the time until ``data: [DONE]``. Errors are non-200
answers, malformed bodies and transport failures.

The table shows requests/s, p50 and p99 latency, errors, the p50 a gateway adds over ``direct``
and inhouse's requests/s as a multiple of LiteLLM's in the same cell. Everything shares one
machine, load generator included, so compare cells of one run rather than absolute numbers.

Run it with the project's virtual environment (``make bench-gateway`` does the first)::

    .venv/bin/python bench/gateway.py                      # 5 s per cell, about 3 minutes
    .venv/bin/python bench/gateway.py --quick              # 1.5 s per cell
    .venv/bin/python bench/gateway.py --targets direct,inhouse --concurrency 1,64 --json out.json
    .venv/bin/python bench/gateway.py --targets direct,inhouse,quotas,redis   # cost of quotas
    .venv/bin/python bench/gateway.py --targets direct,inhouse,noaudit,aes    # cost of the audit
    .venv/bin/python bench/gateway.py --targets direct,baseline,inhouse --baseline HEAD~3
                                                # this checkout against an earlier commit

``baseline`` is ``inhouse`` run from another commit (``--baseline REF``, checked out as a
temporary git worktree, on the same virtual environment): the ``inhouse`` rows then show
their throughput as a multiple of the baseline's and the p50 they add over it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway import targets as tg
from _gateway.procs import Children, supervised, tail

HERE = Path(__file__).resolve().parent
UPSTREAM = HERE / "_gateway" / "upstream.py"
LOADGEN = HERE / "_gateway" / "loadgen.py"
ALL_TARGETS = ("direct", "baseline", "inhouse", "litellm", "quotas", "redis", "noaudit", "aes")
SETTINGS_TARGETS = {
    "noaudit": {"INHOUSE_AUDIT__INFERENCE_EVENTS": "false"},
    "aes": {"INHOUSE_CRYPTO__ALGORITHM": "aes-256-gcm"},
}
DEFAULT_TARGETS = ("direct", "inhouse", "litellm")
MODES = ("json", "stream")
TIMES = "\u00d7"
Row = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark inhouse's gateway pass-through against a fake upstream and LiteLLM."
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma list of {','.join(ALL_TARGETS)} (default %(default)s)",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/0", help="Redis of the 'redis' target"
    )
    parser.add_argument(
        "--baseline", metavar="REF", help="git commit the 'baseline' target runs (e.g. HEAD~3)"
    )
    parser.add_argument("--concurrency", default="1,16,64", help="comma list (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--quick", action="store_true", help="1.5 s cells (overrides --seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(ALL_TARGETS))
    if unknown or not args.targets:
        parser.error(f"--targets: unknown {unknown}; choose from {','.join(ALL_TARGETS)}")
    if ("baseline" in args.targets) != (args.baseline is not None):
        parser.error("the baseline target and --baseline REF go together")
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency: comma-separated integers, e.g. 1,16,64")
    if not args.concurrency or min(args.concurrency) < 1 or max(args.concurrency) > 1024:
        parser.error("--concurrency: values between 1 and 1024")
    if args.quick:
        args.seconds = 1.5
    if not 0.2 <= args.seconds <= 600:
        parser.error("--seconds: between 0.2 and 600")
    args.warmup = round(max(0.3, min(1.0, args.seconds * 0.2)), 2)
    return args


# --- running ---------------------------------------------------------------------------------


def start_upstream(children: Children, workdir: Path) -> str:
    """Start the fake upstream; returns its base URL (ending in /v1)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    log = workdir / "upstream.log"
    proc = children.spawn([sys.executable, str(UPSTREAM), "--port", "0"], env, workdir, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r"^PORT (\d+)$", log.read_text(errors="replace"), re.MULTILINE)
        if match:  # printed once it listens
            return f"http://127.0.0.1:{match.group(1)}/v1"
        time.sleep(0.05)
    raise SystemExit(f"the fake upstream did not start:\n{tail(log)}")


def run_cell(target: tg.Target, mode: str, conc: int, args: argparse.Namespace) -> Row:
    cmd = [sys.executable, str(LOADGEN), "--url", target.base_url, "--key", target.key]
    cmd += ["--model", target.model, "--concurrency", str(conc)]
    cmd += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    if mode == "stream":
        cmd.append("--stream")
    row: Row = {"target": target.name, "mode": mode, "concurrency": conc}
    limit = args.seconds + args.warmup + 90
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        row.update(requests=0, errors=-1, rps=0.0, p50_ms=None, p99_ms=None)
        row["error_samples"] = [f"load generator failed: {exc}"]
    return row


def bench_target(
    target: tg.Target, args: argparse.Namespace, show: Callable[[Row], None]
) -> list[Row]:
    rows = []
    for mode in MODES:
        for conc in args.concurrency:
            row = run_cell(target, mode, conc, args)
            show(row)
            rows.append(row)
    return rows


def start_target(
    name: str, upstream: str, children: Children, workdir: Path, args: argparse.Namespace
) -> tg.Target:
    redis_url = args.redis_url
    if name == "direct":
        target = tg.direct(upstream)
    elif name == "baseline":
        source = tg.checkout(args.baseline, workdir)
        args.cleanup.append(lambda: tg.remove_checkout(source))
        target = tg.start_inhouse(upstream, workdir, children, name=name, source=source)
    elif name == "inhouse":
        target = tg.start_inhouse(upstream, workdir, children)
    elif name == "quotas":
        target = tg.start_inhouse(upstream, workdir, children, name=name, quotas=True)
    elif name == "redis":
        target = tg.start_inhouse(
            upstream, workdir, children, name=name, quotas=True, redis_url=redis_url
        )
    elif name in SETTINGS_TARGETS:
        target = tg.start_inhouse(
            upstream, workdir, children, name=name, settings=SETTINGS_TARGETS[name]
        )
    else:
        target = tg.start_litellm(upstream, workdir, children)
    tg.smoke_test(target)
    return target


def run_all(
    args: argparse.Namespace, children: Children, workdir: Path
) -> tuple[list[Row], dict[str, str]]:
    upstream = start_upstream(children, workdir)
    print(f"fake upstream on {upstream}")
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for name in args.targets:
        print(f"[{name}] starting ...", flush=True)
        try:
            target = start_target(name, upstream, children, workdir, args)
        except tg.TargetError as exc:
            skipped[name] = str(exc)
            print(f"[{name}] SKIPPED: {exc}", flush=True)
            continue
        rows += bench_target(target, args, _progress)
        if target.proc is not None:
            children.stop(target.proc)  # free its CPU and memory before the next target
    return rows, skipped


def _progress(row: Row) -> None:
    p50 = _fmt(row.get("p50_ms"), 2)
    err = f"  errors={row['errors']} {row.get('error_samples', [])[:1]}" if row["errors"] else ""
    print(
        f"  {row['target']:<8} {row['mode']:<6} c={row['concurrency']:<4}"
        f" {row['rps']:>9.1f} req/s  p50 {p50} ms{err}",
        flush=True,
    )


# --- report ----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def add_comparisons(rows: list[Row]) -> None:
    """Add ``added_p50_ms`` (vs direct), ``inhouse_vs_litellm_rps`` and, for the quota
    targets, ``vs_inhouse_rps`` (their throughput as a share of plain inhouse's)."""
    cells = {(r["target"], r["mode"], r["concurrency"]): r for r in rows}
    for row in rows:
        key = (row["mode"], row["concurrency"])
        base = cells.get(("direct", *key))
        if row["target"] != "direct" and base and base.get("p50_ms") and row.get("p50_ms"):
            row["added_p50_ms"] = round(row["p50_ms"] - base["p50_ms"], 3)
        lite = cells.get(("litellm", *key))
        if row["target"] == "inhouse" and lite and lite.get("rps"):
            row["inhouse_vs_litellm_rps"] = round(row["rps"] / lite["rps"], 3)
        plain = cells.get(("inhouse", *key))
        if row["target"] in ("quotas", "redis", *SETTINGS_TARGETS) and plain and plain.get("rps"):
            row["vs_inhouse_rps"] = round(row["rps"] / plain["rps"], 3)
        before = cells.get(("baseline", *key))
        if row["target"] == "inhouse" and before and before.get("rps") and row.get("p50_ms"):
            row["vs_baseline_rps"] = round(row["rps"] / before["rps"], 3)
            row["p50_over_baseline_ms"] = round(row["p50_ms"] - before["p50_ms"], 3)


def summary_lines(rows: list[Row], args: argparse.Namespace) -> list[str]:
    cells = {(r["target"], r["mode"], r["concurrency"]): r for r in rows}
    added = cells.get(("inhouse", "json", 1), {}).get("added_p50_ms")
    c_hi = 64 if 64 in args.concurrency else max(args.concurrency)
    ratio = cells.get(("inhouse", "json", c_hi), {}).get("inhouse_vs_litellm_rps")
    lines = [
        f"inhouse added p50 at c=1 (json): {_fmt(added, 2)} ms",
        f"inhouse/litellm throughput at c={c_hi} (json): {_fmt(ratio, 2)}{TIMES}",
    ]
    versus = cells.get(("inhouse", "json", c_hi), {}).get("vs_baseline_rps")
    if versus is not None:
        over = cells.get(("inhouse", "json", 1), {}).get("p50_over_baseline_ms")
        lines.append(
            f"inhouse/baseline ({args.baseline}): throughput at c={c_hi} (json) "
            f"{_fmt(versus, 3)}{TIMES}; p50 at c=1 (json) {_fmt(over, 3)} ms over the baseline"
        )
    plain = cells.get(("inhouse", "json", 1), {}).get("p50_ms")
    for name in ("quotas", "redis", *SETTINGS_TARGETS):
        p50 = cells.get((name, "json", 1), {}).get("p50_ms")
        share = cells.get((name, "json", c_hi), {}).get("vs_inhouse_rps")
        if p50 is not None and plain is not None:
            lines.append(
                f"{name}: p50 at c=1 (json) {_fmt(p50 - plain, 3)} ms over inhouse; "
                f"throughput at c={c_hi} {_fmt(share, 2)}{TIMES} inhouse's"
            )
    return lines


COLUMNS = (
    "target", "mode", "conc", "req/s", "p50 ms", "p99 ms", "errors", "+p50 ms", "ratio",
)  # fmt: skip


def table_cells(row: Row) -> list[str]:
    ratio = row.get("vs_baseline_rps", row.get("inhouse_vs_litellm_rps", row.get("vs_inhouse_rps")))
    return [
        row["target"],
        row["mode"],
        str(row["concurrency"]),
        _fmt(row.get("rps")),
        _fmt(row.get("p50_ms"), 2),
        _fmt(row.get("p99_ms"), 2),
        str(row.get("errors", "-")),
        _fmt(row.get("added_p50_ms"), 2),
        f"{ratio:.2f}{TIMES}" if ratio is not None else "-",
    ]


def print_table(rows: list[Row], skipped: dict[str, str], title: str) -> None:
    body = [table_cells(r) for r in rows]
    body += [[name, "skipped", *["-"] * (len(COLUMNS) - 2)] for name in skipped]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
        print(title)
        for line in [list(COLUMNS), *body]:
            print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title)
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 2 else "right")
    for line in body:
        table.add_row(*line)
    console = Console()
    if not console.is_terminal:  # piped or redirected: do not squeeze the table into 80 columns
        console = Console(width=120)
    console.print(table)


def write_json(
    path: str, rows: list[Row], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    doc = {
        "benchmark": "gateway",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "targets": args.targets,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "litellm": tg.LITELLM_SPEC,
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "results": rows,
        "skipped": skipped,
        "summary": summary_lines(rows, args),
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results written to {path}")


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.cleanup = []
    try:
        with supervised("inhouse-bench-") as (children, scratch):
            rows, skipped = run_all(args, children, scratch)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for cleanup in args.cleanup:
            cleanup()
    add_comparisons(rows)
    title = f"gateway benchmark: {args.seconds:g} s per cell, warm-up {args.warmup:g} s"
    print()
    print_table(rows, skipped, title)
    print(
        f"ratio: inhouse rows, req/s {TIMES} the baseline's when there is one, else LiteLLM's; "
        f"quotas, redis, noaudit and aes rows, {TIMES} inhouse's"
    )
    for name, why in skipped.items():
        print(f"{name} skipped: {why.splitlines()[0][:200]}")
    for line in summary_lines(rows, args):
        print(line)
    if args.json:
        write_json(args.json, rows, skipped, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
