"""The growing cache layer holds what concatenation would, and copies only on growth."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from inhouse.engine.kv_cache import MIN_SPARE_TOKENS, GrowingLayer, growing


def _states(batch: int, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(batch, 3, tokens, 8, generator=generator)
    return keys, torch.randn(batch, 3, tokens, 8, generator=generator)


def test_appending_equals_concatenation_and_reallocates_only_when_full() -> None:
    keys, values = _states(2, 5, seed=0)
    layer = GrowingLayer(keys, values)
    expected_keys, expected_values = keys, values
    buffers = set()
    for step in range(200):
        new_keys, new_values = _states(2, 1, seed=step + 1)
        got_keys, got_values = layer.update(new_keys, new_values)
        expected_keys = torch.cat([expected_keys, new_keys], dim=-2)
        expected_values = torch.cat([expected_values, new_values], dim=-2)
        assert torch.equal(got_keys, expected_keys) and torch.equal(got_values, expected_values)
        assert layer.get_seq_length() == 6 + step
        buffers.add(got_keys.data_ptr())
    assert len(buffers) <= 1 + 200 // MIN_SPARE_TOKENS  # not one copy per step
    assert 205 <= layer.capacity <= 205 + MIN_SPARE_TOKENS


def test_keys_replaced_from_outside_are_taken_over() -> None:
    keys, values = _states(3, 4, seed=0)
    layer = GrowingLayer(keys, values)
    layer.update(*_states(3, 1, seed=1))
    expected = layer.keys.clone()
    # A row leaves (as the running batch does), then padding is cut from the left.
    layer.batch_select_indices(torch.tensor([0, 2]))
    layer.keys, layer.values = layer.keys[:, :, 2:], layer.values[:, :, 2:]
    new_keys, new_values = _states(2, 1, seed=2)
    got_keys, _ = layer.update(new_keys, new_values)
    assert torch.equal(got_keys, torch.cat([expected[[0, 2], :, 2:], new_keys], dim=-2))
    assert got_keys.shape == (2, 3, 4, 8)


def test_growing_converts_full_attention_layers_of_a_cache() -> None:
    cache = growing(DynamicCache(ddp_cache_data=[_states(1, 4, seed=0), _states(1, 4, seed=1)]))
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    assert cache.get_seq_length() == 4
    untouched = DynamicLayer()
    cache.layers.append(untouched)  # an empty layer stays what it was
    assert growing(cache).layers[-1] is untouched


def test_tensors_handed_out_stay_as_they_were_after_a_crop_or_reset() -> None:
    layer = GrowingLayer(*_states(1, 4, seed=0))
    for step in range(3):
        layer.update(*_states(1, 1, seed=step + 1))
    before, _ = layer.update(*_states(1, 1, seed=9))
    kept = before.clone()
    layer.crop(-2)
    after, _ = layer.update(*_states(1, 2, seed=10))
    assert torch.equal(before, kept)  # the new tokens went elsewhere
    assert after.shape[-2] == 8 and torch.equal(after[:, :, :6], kept[:, :, :6])
    layer.reset()
    keys, _ = layer.update(*_states(1, 3, seed=11))
    assert layer.get_seq_length() == 3 and keys.shape == (1, 3, 3, 8)
