"""int8 Linear layers for the CPU: per-channel int8 weights, per-token int8 activations.

``Int8Linear`` runs one Linear layer through the fbgemm kernel of ``torch.ao``'s dynamic
quantisation. Layers that read the same input (a decoder's query, key and value
projections; its gate and up projections) are packed into one kernel call by
``SharedInputProjections``: at batch 1 a decode step's time goes largely to the fixed
cost of each call, and at larger batches to quantising the same activations again.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from inhouse.engine.smoothing import Int8Format

# Weights on [-64, 64] and activations on 256 levels: on a CPU without VNNI, the int8
# kernel adds pairs of u8 x s8 products in int16 with saturation, and 2 * 255 * 64 still
# fits. torch.ao's default (8-bit weights, 7-bit "reduce_range" activations) measured
# worse on the built-in model: activations carry the outliers (docs/benchmarks.md).
INT8_FORMAT = Int8Format(weight_max=64, activation_levels=255)
# Children that a decoder block calls on one and the same input, per parent module.
SHARED_INPUT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj"),
    ("gate_proj", "up_proj"),
)
_TINY = 1e-12


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights and per-token int8 activations.

    The kernel quantises its input on one scale per call; dividing each row by its
    largest magnitude first (and multiplying the output rows back) makes that scale
    per token, exactly, since the layer is linear. A single row, as in a batch-1
    decode step, needs no division.
    """

    def __init__(self, linear: nn.Linear, fmt: Int8Format = INT8_FORMAT) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        step = weight.abs().amax(dim=1).clamp(min=_TINY) / fmt.weight_max
        # Every row's largest weight lands on +-weight_max, and ties round to even.
        # ``torch.quantize_per_channel`` rounds ``w * (1 / step)`` instead, which pushes
        # exact ties (common in weights converted from a GGUF grid) towards zero: +1.2%
        # perplexity on the built-in model.
        grid = weight.div(step.unsqueeze(1)).round_().clamp_(-fmt.weight_max, fmt.weight_max)
        with warnings.catch_warnings():
            # Quantized tensors are deprecated in favour of torchao, which has no CPU int8
            # kernel as fast as fbgemm's dynamic one without torch.compile.
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            quantised = torch._make_per_channel_quantized_tensor(
                grid.to(torch.int8), step.double(), torch.zeros_like(step, dtype=torch.long), 0
            )
            self._packed = torch.ops.quantized.linear_prepack(quantised, None)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:
            out: torch.Tensor = torch.ops.quantized.linear_dynamic(x, self._packed, False)
        else:
            peak = torch.linalg.vector_norm(x, ord=float("inf"), dim=-1, keepdim=True)
            peak = peak.clamp_min_(_TINY)
            out = torch.ops.quantized.linear_dynamic(x / peak, self._packed, False).mul_(peak)
        return out if self.bias is None else out.add_(self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def stacked(linears: Sequence[nn.Linear]) -> nn.Linear:
    """One Linear layer whose output is the outputs of ``linears`` side by side."""
    weight = torch.cat([linear.weight.detach().float() for linear in linears])
    has_bias = any(linear.bias is not None for linear in linears)
    result = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
    with torch.no_grad():
        result.weight.copy_(weight)
        if result.bias is not None:
            parts = [
                torch.zeros(linear.out_features) if linear.bias is None else linear.bias.detach()
                for linear in linears
            ]
            result.bias.copy_(torch.cat(parts))
    return result


class SharedInputProjections(nn.Module):
    """Several Linear layers run as one ``Int8Linear`` over their stacked weights.

    ``projection(i)`` stands in for layer ``i``. Called with a tensor, it runs the
    stacked layer unless that same tensor object was the last input, and returns its
    part of the output, which is exactly what layer ``i`` gives. So the answer is right
    for any order of calls; when a block hands one input to every layer in turn, as
    decoders do, the kernel runs once. The last input is held until each layer has
    taken its part of it.
    """

    def __init__(self, linears: Sequence[nn.Linear], fmt: Int8Format = INT8_FORMAT) -> None:
        super().__init__()
        if len({linear.in_features for linear in linears}) != 1:
            raise ValueError("projections that share an input have one input width")
        self.stacked = Int8Linear(stacked(linears), fmt)
        self._sizes = [linear.out_features for linear in linears]
        self._input: torch.Tensor | None = None
        self._parts: tuple[torch.Tensor, ...] = ()
        self._untaken = 0

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if x is not self._input:
            self._parts = tuple(self.stacked(x).split(self._sizes, dim=-1))
            self._input = x
            self._untaken = len(self._sizes)
        result = self._parts[index]
        self._untaken -= 1
        if self._untaken <= 0:
            self._input, self._parts = None, ()
        return result

    def projection(self, index: int) -> ProjectionPart:
        return ProjectionPart(self, index, self._sizes[index])


class ProjectionPart(nn.Module):
    """Layer ``index`` of a ``SharedInputProjections``; the group is registered on the
    parent module, not here."""

    def __init__(self, group: SharedInputProjections, index: int, out_features: int) -> None:
        super().__init__()
        self._group = (group,)  # a tuple: not a submodule of this one
        self.index = index
        self.in_features = group.stacked.in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._group[0].part(x, self.index)

    def extra_repr(self) -> str:
        return f"part {self.index} of shared-input int8, out_features={self.out_features}"


def _share_inputs(parent: nn.Module, names: tuple[str, ...], kept: tuple[str, ...]) -> None:
    linears = [getattr(parent, name, None) for name in names]
    if not all(isinstance(linear, nn.Linear) for linear in linears):
        return
    if any(name.endswith(kept) for name in names):
        return
    group = SharedInputProjections([linear for linear in linears if linear is not None])
    parent.add_module("shared_" + "_".join(name.removesuffix("_proj") for name in names), group)
    for index, name in enumerate(names):
        setattr(parent, name, group.projection(index))


def quantise_linear_layers(
    model: Any, *, keep_float: Iterable[str] = (), share_inputs: bool = True
) -> Any:
    """Replace ``model``'s Linear layers by int8 ones, in place, except those whose names
    end with one of ``keep_float``; with ``share_inputs``, the groups of
    ``SHARED_INPUT_GROUPS`` become one ``SharedInputProjections`` each."""
    kept = tuple(keep_float)
    if share_inputs:
        for _, parent in list(model.named_modules()):
            for names in SHARED_INPUT_GROUPS:
                _share_inputs(parent, names, kept)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full_name = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.Linear) and not full_name.endswith(kept):
                setattr(parent, name, Int8Linear(child))
    return model
