"""Flow overhead: what a six-step flow adds to a request, generation excluded.

The flow: pre ``clean``, ``pii_mask``, ``terms`` (a 10,000-term lexicon over 17
categories), ``features``; post ``pii_check``, ``label``. Each request runs the pre steps
on the input, renders the messages, then the post steps on an answer as long as the
input (the model is not called: its time is not the flow's). Inputs are mixed Chinese and
English text with a phone number, an ID number and an e-mail address, of 1 KiB and 32 KiB
(UTF-8). The baseline, in the same run, is a flow with no steps (template only): the
floor any flow pays. The ratio column is the six-step p50 over the 1 ms budget.

    .venv/bin/python bench/flows.py              # about 20 s
    .venv/bin/python bench/flows.py --requests 5000
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from inhouse.flows.catalogue import default_registry
from inhouse.flows.runner import CompiledFlow
from inhouse.flows.spec import validate_spec

BUDGET_MS = 1.0
SIZES = (1024, 32 * 1024)
CATEGORIES = 17
TERMS = 10_000

SENTENCES = (
    "客户张先生来电询问理赔进度，他的保单号是 P-2026-0071。",
    "Please summarize the attached claim and list the missing documents.",
    "联系电话 138 0013 8000，邮箱 zhang.wei@example.cn。",
    "身份证号 11010519491231002X，请核对后回复。",
    "The customer asked whether the deductible applies to outpatient care.",
    "我们将在三个工作日内完成审核并短信通知。",
)


def make_text(size: int, seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    while len(" ".join(parts).encode()) < size:
        parts.append(rng.choice(SENTENCES))
    text = " ".join(parts)
    while len(text.encode()) > size:
        text = text[:-1]
    return text


def make_lexicon(directory: Path) -> Path:
    rng = random.Random(7)
    alphabet = "违规暴力赌博诈骗毒品枪支色情邪教恐怖分裂谣言侮辱"
    categories = {}
    for index in range(CATEGORIES):
        terms = {
            "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 6)))
            for _ in range(TERMS // CATEGORIES)
        }
        action = "block" if index < 5 else ("mask" if index < 10 else "flag")
        categories[f"risk-{index:02d}"] = {"action": action, "terms": sorted(terms)}
    path = directory / "lexicon.yaml"
    path.write_text(yaml.safe_dump({"version": "bench", "categories": categories}))
    return path


def flows(lexicon: Path) -> dict[str, CompiledFlow]:
    registry = default_registry()
    six = {
        "name": "six-steps",
        "model": {"alias": "m", "system_prompt": "You answer claims questions."},
        "pre": [
            {"type": "clean"},
            {"type": "pii_mask"},
            {"type": "terms", "options": {"lexicon": str(lexicon)}},
            {"type": "features"},
        ],
        "post": [{"type": "pii_check"}, {"type": "label"}],
    }
    bare = {"name": "no-steps", "model": {"alias": "m", "system_prompt": "You answer."}}
    return {
        name: CompiledFlow(validate_spec(spec, registry), registry)
        for name, spec in (("no steps (baseline)", bare), ("six steps", six))
    }


def measure(
    flow: CompiledFlow, text: str, requests: int
) -> tuple[list[float], dict[str, list[float]]]:
    """Milliseconds per request (pre steps, messages, post steps), and each step's µs."""
    for _ in range(20):  # warm-up
        flow.finish(flow.start(text), text)
    samples: list[float] = []
    steps: dict[str, list[float]] = {}
    for _ in range(requests):
        started = time.perf_counter_ns()
        run = flow.start(text)
        flow.finish(run, text)
        samples.append((time.perf_counter_ns() - started) / 1e6)
        for entry in run.trace:
            steps.setdefault(entry.step, []).append(entry.micros)
    return samples, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per cell")
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    rows = []
    per_step: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        compiled = flows(make_lexicon(Path(tmp)))
        for size in SIZES:
            text = make_text(size, seed=size)
            for name, flow in compiled.items():
                count = args.requests if size <= 1024 else max(200, args.requests // 10)
                samples, steps = measure(flow, text, count)
                samples.sort()
                if name == "six steps":
                    per_step[f"{size // 1024} KiB"] = {
                        step: statistics.median(micros) for step, micros in steps.items()
                    }
                p50 = statistics.median(samples)
                p99 = samples[int(len(samples) * 0.99) - 1]
                ratio = f"{p50 / BUDGET_MS:.2f}" if name == "six steps" else "-"
                rows.append([f"{size // 1024} KiB", name, f"{p50:.3f}", f"{p99:.3f}", ratio])
    header = ["input", "flow", "p50 ms", "p99 ms", "p50 / 1 ms budget"]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print("\nsix steps, p50 µs per step (from the flow's own trace):")
    for size, steps in per_step.items():
        print(f"  {size}: " + ", ".join(f"{step} {us:.1f}" for step, us in steps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
