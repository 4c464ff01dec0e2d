"""The hostile tenant of ``bench/hostile.py``, run as its own process: for ``--seconds``,
``--concurrency`` workers send, in turn, the attacks the gateway must shrug off, and print
one JSON object of how many of each were sent and how they were answered.

- ``regex``: a flow whose PII step has a custom pattern with catastrophic backtracking
  on Python's ``re`` (``(a+)+$``), fed an input made to trigger it;
- ``stop``: four stop strings of 100,000 characters each;
- ``messages``: a body of 4 MiB made of tiny messages;
- ``values``: an unknown field holding 300,000 list items;
- ``prompt``: a prompt of 2.1 million characters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp

BAIT = "a" * 5000 + "!"


def bodies(model: str, flow: str) -> dict[str, bytes]:
    tiny = {"role": "user", "content": ""}
    user = [{"role": "user", "content": "hi"}]
    documents = {
        "regex": {"model": flow, "messages": [{"role": "user", "content": BAIT}]},
        "stop": {"model": model, "messages": user, "stop": ["x" * 100_000] * 4},
        "messages": {"model": model, "messages": [tiny] * 140_000},
        "values": {"model": model, "messages": user, "extra": [0] * 300_000},
        "prompt": {"model": model, "messages": [{"role": "user", "content": "y" * 2_100_000}]},
    }
    return {name: json.dumps(doc).encode() for name, doc in documents.items()}


async def attack(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    prepared = bodies(args.model, args.flow)
    answered: dict[str, Counter[str]] = {name: Counter() for name in prepared}
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    deadline = time.monotonic() + args.seconds
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(offset: int) -> None:
        names = list(prepared)
        turn = offset
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                name = names[turn % len(names)]
                turn += 1
                try:
                    async with session.post(
                        f"{args.url}/chat/completions", data=prepared[name], headers=headers
                    ) as response:
                        await response.read()
                        answered[name][str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answered[name][type(exc).__name__] += 1

    await asyncio.gather(*(worker(n) for n in range(args.concurrency)))
    return {name: dict(counts) for name, counts in answered.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the gateway's /v1 base URL")
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--flow", required=True, help="flow:NAME of the pathological flow")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(attack(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
