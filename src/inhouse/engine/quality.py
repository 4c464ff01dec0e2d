"""Measuring what a precision costs: perplexity of a model on a text."""

from __future__ import annotations

import math
from typing import Any

import torch


def perplexity(model: Any, tokenizer: Any, text: str, *, window: int = 512) -> float:
    """exp(mean negative log-likelihood per token), over non-overlapping windows."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    total_nll = 0.0
    counted = 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window + 1].unsqueeze(0)
            if chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk[:, :-1]).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
            total_nll += float(nll)
            counted += chunk.shape[1] - 1
    return math.exp(total_nll / counted)
