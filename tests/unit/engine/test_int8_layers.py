"""int8 layers: per-token activations, and projections that share an input in one call."""

from __future__ import annotations

import copy

import torch

from inhouse.engine.int8_layers import (
    Int8Linear,
    ProjectionPart,
    SharedInputProjections,
    quantise_linear_layers,
)
from tests.unit.engine.test_smoothing import logits, tiny_model, token_ids


def test_int8_linear_is_close_to_float_and_quantises_per_token() -> None:
    torch.manual_seed(3)
    linear = torch.nn.Linear(64, 48)
    quantised = Int8Linear.from_linear(linear)
    rows = torch.randn(1, 5, 64)
    with torch.inference_mode():
        exact = linear(rows)
        error = (quantised(rows) - exact).abs().max() / exact.abs().max()
        assert float(error) < 0.03
        single = quantised(rows[:, :1])
        torch.testing.assert_close(single, quantised(rows)[:, :1], rtol=0.02, atol=0.02)
        # A token a thousand times larger does not coarsen the others' grid.
        loud = torch.cat([rows, rows[:, :1] * 1000.0], dim=1)
        torch.testing.assert_close(quantised(loud)[:, :5], quantised(rows), rtol=1e-4, atol=1e-4)


def _three_projections() -> list[torch.nn.Linear]:
    torch.manual_seed(4)
    return [torch.nn.Linear(64, 64), torch.nn.Linear(64, 16, bias=False), torch.nn.Linear(64, 16)]


def _counted(group: SharedInputProjections) -> list[int]:
    calls: list[int] = []
    group.stacked.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_shared_input_parts_equal_the_separate_int8_layers_and_run_the_kernel_once() -> None:
    linears = _three_projections()
    separate = [Int8Linear.from_linear(linear) for linear in linears]
    group = SharedInputProjections(linears)
    parts = [group.projection(index) for index in range(3)]
    calls = _counted(group)
    for rows in (torch.randn(1, 1, 64), torch.randn(3, 7, 64)):
        with torch.inference_mode():
            for part, alone in zip(parts, separate, strict=True):
                torch.testing.assert_close(part(rows), alone(rows), rtol=1e-5, atol=1e-5)
    assert len(calls) == 2  # one kernel call per input, not per projection
    assert [part.out_features for part in parts] == [64, 16, 16]


def test_shared_input_parts_answer_right_in_any_order_of_inputs() -> None:
    linears = _three_projections()
    separate = [Int8Linear.from_linear(linear) for linear in linears]
    group = SharedInputProjections(linears)
    parts: list[ProjectionPart] = [group.projection(index) for index in range(3)]
    first, second = torch.randn(2, 64), torch.randn(2, 64)
    # The key projection first, then an interleaved other input, then a repeat.
    order = [(1, first), (0, second), (2, first), (1, second), (1, second), (0, first)]
    with torch.inference_mode():
        for index, rows in order:
            expected = separate[index](rows)
            torch.testing.assert_close(parts[index](rows), expected, rtol=1e-5, atol=1e-5)


def test_sharing_inputs_keeps_a_decoders_logits() -> None:
    model = tiny_model("qwen2")  # q/k/v with biases
    ids = token_ids()
    shared = quantise_linear_layers(copy.deepcopy(model))
    apart = quantise_linear_layers(copy.deepcopy(model), share_inputs=False)
    attention = shared.model.layers[0].self_attn
    assert isinstance(attention.q_proj, ProjectionPart)
    assert isinstance(shared.model.layers[0].mlp.up_proj, ProjectionPart)
    assert isinstance(attention.o_proj, Int8Linear)
    calls = _counted(attention.shared_q_k_v)
    torch.testing.assert_close(logits(shared, ids), logits(apart, ids), rtol=1e-4, atol=1e-4)
    assert len(calls) == 1


def test_layers_kept_float_are_not_shared() -> None:
    model = quantise_linear_layers(tiny_model(), keep_float=("k_proj", "lm_head"))
    attention = model.model.layers[0].self_attn
    assert isinstance(attention.k_proj, torch.nn.Linear)
    assert isinstance(attention.q_proj, Int8Linear)
    assert isinstance(model.lm_head, torch.nn.Linear)
    assert isinstance(model.model.layers[0].mlp.gate_proj, ProjectionPart)


def test_a_layer_kept_float_by_its_full_name_keeps_its_group_apart() -> None:
    model = quantise_linear_layers(tiny_model(), keep_float=("model.layers.0.self_attn.k_proj",))
    first, second = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    assert isinstance(first.k_proj, torch.nn.Linear)
    assert isinstance(first.q_proj, Int8Linear) and isinstance(first.v_proj, Int8Linear)
    assert isinstance(second.k_proj, ProjectionPart)
