"""The generated trace: a fixed-seed mix of request kinds and priorities, Poisson arrivals.

Request kinds and their shares; sizes are log-normal, given as median (sigma of the log):

- chat, 42%, no task keyword: prompt 180 (0.7) plus 120 (0.5) per earlier message; turns
  1, 3, 5 ... (geometric, ending with probability 0.45 each time); max_tokens 256, 512 or
  1024 (35/50/15%); output 170 (0.6).
- short (extraction, classification), 12%, ``extract``: prompt 350 (0.6), one turn,
  max_tokens 128, output 30 (0.5).
- summarize, 16%, ``summarize``: prompt 1300 (0.6), one turn, max_tokens 256 or 512
  (40/60%), output 200 (0.4).
- translate, 10%, ``translate``: prompt 450 (0.7), one turn, max_tokens 1024, output 0.8
  to 1.3 times the prompt.
- code, 12%, ``code``: prompt 900 (0.8), turns as chat but ending with probability 0.6,
  max_tokens 1024 or 2048 (60/40%), output 350 (0.7).
- analysis, 8%, ``analysis``: prompt 2500 (0.5), one turn, max_tokens 1024, output 450 (0.5).

Output tokens never exceed ``max_tokens``; prompts are clipped to 16..16000 tokens.
Priorities are drawn independently of the kind: 10% high, 70% normal, 20% low. These
shares are assumptions meant to resemble an enterprise assistant (chat and extraction
most of the traffic, a minority of long analytical or coding requests); they are not
measurements of any deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import numpy as np

from inhouse.protocol.types import Priority


class Kind(StrEnum):
    CHAT = "chat"
    SHORT = "short"
    SUMMARIZE = "summarize"
    TRANSLATE = "translate"
    CODE = "code"
    ANALYSIS = "analysis"


KIND_SHARES: tuple[tuple[Kind, float], ...] = (
    (Kind.CHAT, 0.42),
    (Kind.SHORT, 0.12),
    (Kind.SUMMARIZE, 0.16),
    (Kind.TRANSLATE, 0.10),
    (Kind.CODE, 0.12),
    (Kind.ANALYSIS, 0.08),
)
TASKS = MappingProxyType(
    {
        Kind.CHAT: frozenset(),
        Kind.SHORT: frozenset({"extract"}),
        Kind.SUMMARIZE: frozenset({"summarize"}),
        Kind.TRANSLATE: frozenset({"translate"}),
        Kind.CODE: frozenset({"code"}),
        Kind.ANALYSIS: frozenset({"analysis"}),
    }
)
PRIORITY_SHARES: tuple[tuple[Priority, float], ...] = (
    (Priority.HIGH, 0.10),
    (Priority.NORMAL, 0.70),
    (Priority.LOW, 0.20),
)


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    at: float
    """Arrival time at a rate of one request per second; the simulation divides it by the
    rate of each load, so every load and policy sees the same requests in the same order."""
    kind: Kind
    priority: Priority
    prompt_tokens: int
    turns: int
    max_tokens: int
    output_tokens: int

    @property
    def tasks(self) -> frozenset[str]:
        return TASKS[self.kind]


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * np.exp(sigma * rng.standard_normal()))


def _turns(rng: np.random.Generator, stop: float) -> int:
    """Messages: 1, 3, 5 ... (user and assistant turns), ending with probability ``stop``."""
    return 2 * int(rng.geometric(stop)) - 1


def _draw(rng: np.random.Generator, kind: Kind) -> tuple[int, int, int, int]:
    """Prompt tokens, turns, max_tokens and output tokens of one request of ``kind``."""
    if kind is Kind.CHAT:
        turns = _turns(rng, 0.45)
        prompt = _lognormal(rng, 180, 0.7) + sum(
            _lognormal(rng, 120, 0.5) for _ in range(turns - 1)
        )
        max_tokens = int(rng.choice([256, 512, 1024], p=[0.35, 0.5, 0.15]))
        output = _lognormal(rng, 170, 0.6)
    elif kind is Kind.SHORT:
        turns, prompt, max_tokens = 1, _lognormal(rng, 350, 0.6), 128
        output = _lognormal(rng, 30, 0.5)
    elif kind is Kind.SUMMARIZE:
        turns, prompt = 1, _lognormal(rng, 1300, 0.6)
        max_tokens = int(rng.choice([256, 512], p=[0.4, 0.6]))
        output = _lognormal(rng, 200, 0.4)
    elif kind is Kind.TRANSLATE:
        turns, prompt, max_tokens = 1, _lognormal(rng, 450, 0.7), 1024
        output = prompt * rng.uniform(0.8, 1.3)
    elif kind is Kind.CODE:
        turns = _turns(rng, 0.6)
        prompt = _lognormal(rng, 900, 0.8)
        max_tokens = int(rng.choice([1024, 2048], p=[0.6, 0.4]))
        output = _lognormal(rng, 350, 0.7)
    else:
        turns, prompt, max_tokens = 1, _lognormal(rng, 2500, 0.5), 1024
        output = _lognormal(rng, 450, 0.5)
    prompt_tokens = min(max(round(prompt), 16), 16_000)
    output_tokens = min(max(round(output), 1), max_tokens)
    return prompt_tokens, turns, max_tokens, output_tokens


def generate(count: int, seed: int) -> list[Request]:
    """``count`` requests with Poisson arrivals at one request per second."""
    rng = np.random.default_rng(seed)
    kinds = [kind for kind, _ in KIND_SHARES]
    kind_p = [share for _, share in KIND_SHARES]
    priorities = [priority for priority, _ in PRIORITY_SHARES]
    priority_p = [share for _, share in PRIORITY_SHARES]
    gaps = rng.exponential(1.0, size=count)
    at = np.cumsum(gaps)
    requests = []
    for index in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=kind_p))]
        priority = priorities[int(rng.choice(len(priorities), p=priority_p))]
        prompt, turns, max_tokens, output = _draw(rng, kind)
        requests.append(
            Request(index, float(at[index]), kind, priority, prompt, turns, max_tokens, output)
        )
    return requests
