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
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Int8Format:
    """The integer grid the kernels use: symmetric per-output-channel weights in
    ``[-weight_max, weight_max]`` and ``activation_levels`` steps per token across
    ``[-peak, peak]`` (the error model of ``smoothing``'s search)."""

    weight_max: int
    activation_levels: int

    def weight_steps(self, row_peaks: torch.Tensor) -> torch.Tensor:
        return row_peaks / self.weight_max

    def activation_steps(self, row_peaks: torch.Tensor) -> torch.Tensor:
        return row_peaks * (2.0 / self.activation_levels)


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
    """A Linear layer with int8 weights and int8 activations scaled per token.

    The kernel quantises its input on one grid per call, spanning the smallest and
    largest value of the whole input. Dividing each row by its largest magnitude first
    (and multiplying the output rows back, exact for a linear layer) puts every token on
    its own scale, so one loud token does not coarsen the others' steps; the grid's
    range is still shared by the rows of one call. A single row, as in a batch-1 decode
    step, needs no division, and gets the kernel's grid over its own minimum and maximum.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, fmt: Int8Format = INT8_FORMAT
    ) -> None:
        super().__init__()
        weight = weight.detach().float()
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
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else nn.Parameter(bias.detach().float())

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: Int8Format = INT8_FORMAT) -> Int8Linear:
        return cls(linear.weight, linear.bias, fmt)

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


def stacked(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias of one layer whose output is ``linears``' side by side."""
    weight = torch.cat([linear.weight.detach().float() for linear in linears])
    if all(linear.bias is None for linear in linears):
        return weight, None
    parts = [
        torch.zeros(linear.out_features) if linear.bias is None else linear.bias.detach().float()
        for linear in linears
    ]
    return weight, torch.cat(parts)


class SharedInputProjections(nn.Module):
    """Several Linear layers run as one ``Int8Linear`` over their stacked weights.

    ``projection(i)`` stands in for layer ``i``. Called with a tensor, it runs the
    stacked layer unless that same tensor object was the last input, and returns its
    part of the output, which is exactly what layer ``i`` gives. So the answer is right
    for any order of calls; when a block hands one input to every layer in turn, as
    decoders do, the kernel runs once. The last input is held until each layer has
    taken its part of it.

    It assumes one thread runs the model (the engine's single worker does) and that the
    input is not changed in place between the calls.
    """

    def __init__(self, linears: Sequence[nn.Linear], fmt: Int8Format = INT8_FORMAT) -> None:
        super().__init__()
        if len({linear.in_features for linear in linears}) != 1:
            raise ValueError("projections that share an input have one input width")
        self.stacked = Int8Linear(*stacked(linears), fmt)
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


def _share_inputs(
    parent_name: str, parent: nn.Module, names: tuple[str, ...], kept: tuple[str, ...]
) -> None:
    linears = [getattr(parent, name, None) for name in names]
    if not all(isinstance(linear, nn.Linear) for linear in linears):
        return
    if any(_full_name(parent_name, name).endswith(kept) for name in names):
        return
    group = SharedInputProjections([linear for linear in linears if isinstance(linear, nn.Linear)])
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
        for parent_name, parent in list(model.named_modules()):
            for names in SHARED_INPUT_GROUPS:
                _share_inputs(parent_name, parent, names, kept)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and not _full_name(parent_name, name).endswith(kept):
                setattr(parent, name, Int8Linear.from_linear(child))
    return model


def _full_name(parent_name: str, name: str) -> str:
    return f"{parent_name}.{name}" if parent_name else name
