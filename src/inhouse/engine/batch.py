"""The running batch: one KV cache for all running sequences, rows joining and leaving.

Rows are left-padded to a common length. The attention mask hides the padding and
each row's position ids count only its real tokens, so a sequence computes the same
thing in the batch as alone, up to rounding (in float32 and bfloat16; int8 activations share a grid
range across the rows of a step, see ``int8_layers.Int8Linear``). When a row leaves,
columns that are padding in every remaining row are cut off, so the cache never holds
more than the longest sequence (plus the spare room of ``kv_cache.GrowingLayer``, which
spares each step a copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from inhouse.engine.kv_cache import growing


class RunningBatch:
    def __init__(self, model: Any) -> None:
        self._model = model
        self.seq_ids: list[int] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)
        self._positions = torch.zeros(0, dtype=torch.long)
        self._last_tokens = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.seq_ids)

    @property
    def cached_tokens(self) -> int:
        """Cache slots held, padding included: rows times the longest row."""
        return int(self._mask.numel())

    def prefill(self, prompts: Sequence[tuple[int, list[int]]]) -> dict[int, torch.Tensor]:
        """Run newcomers' prompts, add their caches as rows; return each one's last logits.

        Prompts of similar length run as one left-padded forward (see ``prefill_groups``),
        with the mask and position ids ``generate`` would give each alone."""
        logits: dict[int, torch.Tensor] = {}
        for group in prefill_groups(prompts):
            width = max(len(ids) for _, ids in group)
            ids = torch.zeros((len(group), width), dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, (_, prompt_ids) in enumerate(group):
                ids[row, width - len(prompt_ids) :] = torch.tensor(prompt_ids, dtype=torch.long)
                mask[row, width - len(prompt_ids) :] = 1
            out = self._model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(dim=1) - 1).clamp_(min=0),
                use_cache=True,
                logits_to_keep=1,
            )
            self._join([seq_id for seq_id, _ in group], out.cache, mask)
            for row, (seq_id, _) in enumerate(group):
                logits[seq_id] = out.logits[row, -1]
        return logits

    def set_next_tokens(self, tokens: dict[int, int]) -> None:
        for row, seq_id in enumerate(self.seq_ids):
            if seq_id in tokens:
                self._last_tokens[row] = tokens[seq_id]

    def decode(self) -> torch.Tensor:
        """One step for every row: feed each row's last token, return logits ``[rows, vocab]``."""
        assert self._cache is not None
        rows = len(self.seq_ids)
        mask = torch.cat([self._mask, torch.ones((rows, 1), dtype=torch.long)], dim=1)
        out = self._model(
            input_ids=self._last_tokens.view(rows, 1),
            attention_mask=mask,
            position_ids=self._positions.view(rows, 1),
            cache=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._cache = out.cache
        self._mask = mask
        self._positions = self._positions + 1
        logits: torch.Tensor = out.logits[:, -1]
        return logits

    def remove(self, seq_ids: set[int]) -> None:
        keep = [row for row, seq_id in enumerate(self.seq_ids) if seq_id not in seq_ids]
        if len(keep) == len(self.seq_ids):
            return
        self.seq_ids = [self.seq_ids[row] for row in keep]
        if not keep:
            self._cache = None
            self._mask = torch.zeros((0, 0), dtype=torch.long)
            self._positions = torch.zeros(0, dtype=torch.long)
            self._last_tokens = torch.zeros(0, dtype=torch.long)
            return
        index = torch.tensor(keep, dtype=torch.long)
        assert self._cache is not None
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._positions = self._positions[index]
        self._last_tokens = self._last_tokens[index]
        first_used = int(self._mask.any(dim=0).nonzero()[0])
        if first_used:
            self._crop_left(first_used)

    # -- internals -------------------------------------------------------------------
    def _join(self, seq_ids: list[int], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add rows: ``cache`` holds them left-padded to ``mask``'s width."""
        if self._cache is None:
            self._cache, self._mask = growing(cache), mask
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            # The layers keep their kind; a growing layer moves the new tensors into a
            # buffer with room at its next step.
            for old, new in zip(_layers(self._cache), _layers(cache), strict=True):
                old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)])
                old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)])
            self._mask = torch.cat([_pad_left(self._mask, width), _pad_left(mask, width)])
        self.seq_ids.extend(seq_ids)
        self._positions = torch.cat([self._positions, mask.sum(dim=1)])
        self._last_tokens = torch.cat(
            [self._last_tokens, torch.zeros(len(seq_ids), dtype=torch.long)]
        )

    def _crop_left(self, columns: int) -> None:
        assert self._cache is not None
        for layer in _layers(self._cache):
            layer.keys = layer.keys[:, :, columns:]
            layer.values = layer.values[:, :, columns:]
        self._mask = self._mask[:, columns:]


# A group of prompts prefilled together may spend this much more on padding than the
# prompts themselves hold (padded area over real tokens).
MAX_PREFILL_PADDING = 1.25


def prefill_groups(
    prompts: Sequence[tuple[int, list[int]]], max_padding: float = MAX_PREFILL_PADDING
) -> list[list[tuple[int, list[int]]]]:
    """Prompts sorted by length, cut into groups whose left-padded area stays within
    ``max_padding`` times their tokens."""
    groups: list[list[tuple[int, list[int]]]] = []
    tokens = 0
    for prompt in sorted(prompts, key=lambda item: len(item[1])):
        length = len(prompt[1])
        if groups and length * (len(groups[-1]) + 1) <= max_padding * (tokens + length):
            groups[-1].append(prompt)
            tokens += length
        else:
            groups.append([prompt])
            tokens = length
    return groups


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad the sequence dimension (dim -2 of a cache tensor, dim -1 of a mask)."""
    dim = -1 if tensor.dim() == 2 else -2
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _layers(cache: DynamicCache) -> list[Any]:
    """The per-layer key/value holders (``DynamicLayer``: ``keys``, ``values``)."""
    return list(cache.layers)
