"""The engine benchmark's workload (prompts, request bodies) and its statistics helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MODEL = "smollm2-135m-instruct"
SYSTEM = "You are a helpful assistant."

# Open questions that make a small instruct model talk for a while (the model may still stop
# early: every system reports the tokens it actually generated). Rendered with the chat
# template and the short system message above, each prompt is 31-41 tokens.
QUESTIONS: tuple[str, ...] = (
    "Explain how a bicycle gear system works and why riders shift gears on hills.",
    "Describe the water cycle step by step for a curious ten-year-old.",
    "What are the main differences between a list and a tuple in Python?",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Give me a detailed plan for learning to cook healthy meals on a small budget.",
    "How do vaccines teach the immune system to recognise a virus?",
    "Compare trains and planes for a 600 km trip: cost, time, comfort and emissions.",
    "Explain compound interest with a worked example over five years.",
)


def messages(index: int) -> list[dict[str, str]]:
    """Chat messages of prompt ``index`` (cycled over :data:`QUESTIONS`)."""
    question = QUESTIONS[index % len(QUESTIONS)]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def prompt_index(client: int, turn: int, clients: int) -> int:
    """Which prompt client ``client`` sends on its ``turn``-th request.

    Requests are numbered in the order a first-come-first-served server would take them when
    all clients start together (``turn * clients + client``), so every system, the sequential
    baseline included, sees the same prompts in the same order.
    """
    return turn * clients + client


def chat_body(index: int, max_tokens: int, model: str = MODEL) -> dict[str, Any]:
    """A streaming, greedy OpenAI chat-completions body for prompt ``index``."""
    return {
        "model": model,
        "messages": messages(index),
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
