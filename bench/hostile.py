"""Hostile-tenant benchmark: does one tenant's abuse slow another tenant down?

One ``inhouse serve`` (built-in model off) in front of the very fast fake upstream of the
gateway benchmark, with two tenants. The victim's closed-loop load (the gateway
benchmark's load generator, JSON chat requests) runs three times, ``--seconds`` each:

- ``alone``: nobody else;
- ``attacked``: while the attacker (``_hostile/attacker.py``, its own process) sends
  pathological regular expressions through a flow, stop strings of 100,000 characters,
  4 MiB bodies of tiny messages, 300,000-item fields and 2.1-million-character prompts;
- ``alone again``: nobody else, to bracket the machine's drift.

The table shows the victim's requests/s, p50 and p99 in each phase and the p99 under
attack as a multiple of the p99 alone (the slower of the two alone phases). The aim is at
most 2x. Every process shares the machine's cores, the attacker's own included.

    .venv/bin/python bench/hostile.py                 # 8 s a phase, about a minute
    .venv/bin/python bench/hostile.py --seconds 15 --victims 4 --attackers 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway import targets as tg
from _gateway.procs import Children, supervised

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "_gateway" / "loadgen.py"
UPSTREAM = HERE / "_gateway" / "upstream.py"
ATTACKER = HERE / "_hostile" / "attacker.py"
FLOW = """
name: evil
model: {alias: fake}
pre:
  - type: pii_mask
    options: {custom: {runaway: "(a+)+$"}}
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each phase")
    parser.add_argument("--victims", type=int, default=4, help="the victim's concurrency")
    parser.add_argument("--attackers", type=int, default=2, help="the attacker's concurrency")
    return parser.parse_args()


def start_upstream(children: Children, workdir: Path) -> str:
    log = workdir / "upstream.log"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = children.spawn([sys.executable, str(UPSTREAM), "--port", "0"], env, workdir, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"^PORT (\d+)$", log.read_text(errors="replace"), re.MULTILINE)
        if found:
            return f"http://127.0.0.1:{found.group(1)}/v1"
        time.sleep(0.05)
    raise SystemExit("the fake upstream did not start")


def attacker_key(target: tg.Target, workdir: Path) -> str:
    """The attacker's tenant, key and pathological flow, made with the CLI."""
    env = tg.inhouse_env(workdir / f"{target.name}-data")
    python = tg.inhouse_python()
    tg.inhouse_cli(python, ["tenants", "create", "attacker"], env, workdir)
    spec = workdir / "evil.yaml"
    spec.write_text(FLOW)
    tg.inhouse_cli(python, ["flows", "apply", str(spec), "--tenant", "attacker"], env, workdir)
    created = tg.inhouse_cli(python, ["keys", "create", "--tenant", "attacker"], env, workdir)
    return tg.KEY_RE.findall(created)[-1]


def victim_load(target: tg.Target, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(LOADGEN), "--url", target.base_url, "--key", target.key]
    cmd += ["--model", target.model, "--concurrency", str(args.victims)]
    cmd += ["--seconds", str(args.seconds), "--warmup", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    args = parse_args()
    with supervised("inhouse-hostile-") as (children, workdir):
        upstream = start_upstream(children, workdir)
        target = tg.start_inhouse(upstream, workdir, children, name="gateway")
        key = attacker_key(target, workdir)
        time.sleep(3)  # the running gateway sees the new tenant's flow
        rows: list[tuple[str, dict[str, Any]]] = [("alone", victim_load(target, args))]
        attack_cmd = [sys.executable, str(ATTACKER), "--url", target.base_url, "--key", key,
                      "--model", target.model, "--flow", "flow:evil",
                      "--concurrency", str(args.attackers),
                      "--seconds", str(args.seconds + 3)]  # fmt: skip
        attacker = subprocess.Popen(attack_cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(1)  # the attack is under way before the victim's warm-up
        rows.append(("attacked", victim_load(target, args)))
        attacks = json.loads(attacker.communicate(timeout=args.seconds + 120)[0])
        rows.append(("alone again", victim_load(target, args)))
    print_table(rows, attacks, args)
    return 0


def print_table(
    rows: list[tuple[str, dict[str, Any]]], attacks: dict[str, Any], args: argparse.Namespace
) -> None:
    alone_p99 = max(rows[0][1]["p99_ms"], rows[2][1]["p99_ms"])
    print(f"\nhostile tenant: victim at concurrency {args.victims}, attacker at "
          f"{args.attackers}, {args.seconds:g} s a phase")  # fmt: skip
    print(f"{'phase':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'p99 x':>6}")
    for phase, row in rows:
        ratio = f"{row['p99_ms'] / alone_p99:.2f}" if phase == "attacked" else "-"
        print(f"{phase:<12} {row['rps']:>9.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['errors']:>7} {ratio:>6}")  # fmt: skip
    print("\nattacks sent (status: count):")
    for name, counts in attacks.items():
        print(f"  {name:<9} {counts}")
    attacked = rows[1][1]["p99_ms"] / alone_p99
    print(f"\nvictim p99 under attack: {attacked:.2f}x its p99 alone (aim: at most 2x)")


if __name__ == "__main__":
    sys.exit(main())
