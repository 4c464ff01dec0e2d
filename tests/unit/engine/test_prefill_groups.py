"""Newcomers' prompts are grouped by length so padding stays bounded."""

from __future__ import annotations

from inhouse.engine.batch import MAX_PREFILL_PADDING, prefill_groups


def _prompts(*lengths: int) -> list[tuple[int, list[int]]]:
    return [(seq_id, [7] * length) for seq_id, length in enumerate(lengths)]


def test_similar_prompts_share_a_group_and_a_long_one_runs_apart() -> None:
    groups = prefill_groups(_prompts(30, 900, 32, 31))
    assert [[seq_id for seq_id, _ in group] for group in groups] == [[0, 3, 2], [1]]


def test_every_prompt_is_in_exactly_one_group_and_padding_stays_bounded() -> None:
    prompts = _prompts(5, 1, 40, 41, 7, 300, 6, 290, 2, 2)
    groups = prefill_groups(prompts)
    assert sorted(seq_id for group in groups for seq_id, _ in group) == list(range(len(prompts)))
    for group in groups:
        lengths = [len(ids) for _, ids in group]
        assert max(lengths) * len(lengths) <= MAX_PREFILL_PADDING * sum(lengths)


def test_no_prompts_no_groups() -> None:
    assert prefill_groups([]) == []
