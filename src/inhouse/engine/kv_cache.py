"""Key/value cache layers that grow into spare room instead of by concatenation.

transformers' ``DynamicLayer`` appends each decode step's keys and values with
``torch.cat``: every step copies the whole cache of every layer. ``GrowingLayer`` keeps
them at the start of a larger buffer and writes each step's into the room after them,
so a step copies only its own token; the buffer is reallocated (with room for
``spare_tokens`` more) only when it is full, or when the running batch has replaced
the keys and values by other tensors (a row joined or left, padding was cut).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Spare room per reallocation: at least this many tokens, or an eighth of the length.
MIN_SPARE_TOKENS = 64


def spare_tokens(length: int) -> int:
    return max(MIN_SPARE_TOKENS, length // 8)


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A ``DynamicLayer`` whose ``keys`` and ``values`` are views of the start of a
    buffer with room to append."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values
        self._key_room: torch.Tensor | None = None
        self._value_room: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:  # after ``reset``
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if not (
            _starts(self.keys, self._key_room, end) and _starts(self.values, self._value_room, end)
        ):
            self._key_room = _room_for(self.keys, key_states, length, end)
            self._value_room = _room_for(self.values, value_states, length, end)
        assert self._key_room is not None and self._value_room is not None
        self._key_room[:, :, length:end].copy_(key_states)
        self._value_room[:, :, length:end].copy_(value_states)
        self.keys = self._key_room[:, :, :end]
        self.values = self._value_room[:, :, :end]
        return self.keys, self.values

    # Whatever replaces or shortens the keys and values lets go of the buffer: the next
    # step reallocates, and never writes over a tensor handed out before.
    def reset(self) -> None:
        super().reset()
        self._drop_room()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._drop_room()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._drop_room()

    def _drop_room(self) -> None:
        self._key_room = self._value_room = None

    @property
    def capacity(self) -> int:
        """Tokens the buffer holds before it must be reallocated (0 before the first step)."""
        return 0 if self._key_room is None else self._key_room.shape[-2]


def _starts(current: torch.Tensor | None, room: torch.Tensor | None, end: int) -> bool:
    """Whether ``current`` is still the view of the start of ``room``, with room to ``end``."""
    return (
        current is not None
        and room is not None
        and current.dim() == 4
        and current.data_ptr() == room.data_ptr()
        and current.shape[:2] == room.shape[:2]
        and current.stride() == room.stride()
        and end <= room.shape[-2]
    )


def _room_for(
    current: torch.Tensor | None, incoming: torch.Tensor, length: int, end: int
) -> torch.Tensor:
    batch, heads, _, head_dim = incoming.shape
    room = incoming.new_empty((batch, heads, end + spare_tokens(end), head_dim))
    if length and current is not None:
        room[:, :, :length].copy_(current)
    return room


def growing(cache: DynamicCache) -> DynamicCache:
    """Make ``cache``'s full-attention layers ``GrowingLayer``s, in place; sliding-window
    and other layers stay as they are."""
    cache.layers = [
        GrowingLayer(layer.keys, layer.values)
        if type(layer) is DynamicLayer and layer.keys is not None and layer.values is not None
        else layer
        for layer in cache.layers
    ]
    return cache
