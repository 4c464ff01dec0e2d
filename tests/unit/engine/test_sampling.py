from __future__ import annotations

import torch

from inhouse.engine.base import SamplingParams
from inhouse.engine.sampling import make_generator, next_token

LOGITS = torch.tensor([0.1, 3.0, 2.9, -1.0, 0.0])


def test_greedy_takes_the_highest_score() -> None:
    params = SamplingParams(temperature=0.0)
    assert make_generator(params) is None
    assert next_token(LOGITS, params, None) == 1


def test_same_seed_same_tokens() -> None:
    params = SamplingParams(temperature=1.5, seed=42)
    first = [next_token(LOGITS, params, gen) for gen in [make_generator(params)] for _ in range(20)]
    second_gen = make_generator(params)
    second = [next_token(LOGITS, params, second_gen) for _ in range(20)]
    assert first == second
    assert len(set(first)) > 1  # it really samples


def test_top_p_keeps_only_the_nucleus() -> None:
    params = SamplingParams(temperature=1.0, top_p=0.5, seed=1)
    generator = make_generator(params)
    seen = {next_token(LOGITS, params, generator) for _ in range(200)}
    # tokens 1 and 2 hold ~95% of the mass between them; 1 alone holds ~50%.
    assert seen <= {1, 2}
