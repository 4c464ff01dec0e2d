"""SmoothQuant-style scale migration (Xiao et al., 2023) for int8 decoder models.

int8 activations are quantised on one scale per token, so a few input channels with
large activations (outliers) set the step for all the others. Before quantising, part
of each channel's range moves from the activation into the weight, by rescalings that
are exact (up to float32 rounding) for a Llama-style decoder block:

- ``q_proj``, ``k_proj``, ``v_proj`` read ``input_layernorm``'s output: divide the
  norm's weight by ``s`` and multiply the projections' input columns by ``s``;
- ``gate_proj`` and ``up_proj``: the same through ``post_attention_layernorm``;
- ``down_proj`` reads ``silu(gate) * up``: divide ``up_proj``'s output rows by ``s``;
- ``o_proj`` reads the attention output, a per-head mix of rows of ``v`` with scalar
  weights: divide ``v_proj``'s output rows by ``s``, one scale per key/value channel,
  shared by the query heads of its group;
- ``lm_head`` reads the final norm's output: divide ``model.norm``'s weight, after
  untying ``lm_head`` from the input embeddings.

The scale of channel ``j`` is ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``. One
forward pass over a calibration text shipped with the package (never the held-out text
that measures the quality) gives each layer group its activations; for each group, the
``alpha`` (or no migration at all) with the least expected int8 output error over those
tokens is kept (a rounding-noise model, see ``_Search``). Row scalings do not change
int8 per-output-channel weight quantisation, so only the layers that read the rescaled
activations see a difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from torch import nn

from inhouse.engine.int8_layers import Int8Format

# Families whose decoder blocks have the Llama layout and plain ``weight * x`` norms
# (Gemma's ``(1 + weight)`` norm, for one, would need a different division).
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
# ``None`` is "no migration". On the built-in model the search keeps 0.5-0.65 for
# q/k/v, mostly no migration for o_proj, 0.5-0.8 for gate/up, 0.35-0.65 for down_proj
# and 0.35 for lm_head: no single alpha suits every group (docs/benchmarks.md).
DEFAULT_ALPHAS: tuple[float | None, ...] = (None, 0.2, 0.35, 0.5, 0.65, 0.8)
# The calibration text has about 1,100 tokens; this only bounds the pass.
CALIBRATION_TOKENS = 2048
_EPSILON = 1e-5


@dataclass(frozen=True)
class LayerScales:
    """Migration scales of one decoder block (``o_proj``'s per key/value channel)."""

    qkv: torch.Tensor
    o_proj: torch.Tensor
    gate_up: torch.Tensor
    down_proj: torch.Tensor


@dataclass(frozen=True)
class MigrationScales:
    """The scales of every block, the output layer's, and the ``alpha`` chosen for
    each group (per block: q/k/v, o_proj, gate/up, down_proj; then lm_head)."""

    layers: tuple[LayerScales, ...]
    lm_head: torch.Tensor
    alphas: tuple[float | None, ...]


def supports_smoothing(model: Any) -> bool:
    """Whether ``model`` is a decoder with the layout the migration knows to be exact."""
    return getattr(model.config, "model_type", None) in SUPPORTED_MODEL_TYPES and all(
        hasattr(model, name) for name in ("model", "lm_head")
    )


def calibration_text() -> str:
    """Varied English and Chinese prose and code, written for this package."""
    return resources.files("inhouse.engine").joinpath("calibration.txt").read_text("utf-8")


def calibration_ids(tokenizer: Any, *, max_tokens: int = CALIBRATION_TOKENS) -> torch.Tensor:
    """The first ``max_tokens`` tokens of the calibration text, shape ``[1, n]``."""
    ids: torch.Tensor = tokenizer(calibration_text(), return_tensors="pt").input_ids
    return ids[:, :max_tokens]


def migration_scales(
    activation_max: torch.Tensor, weight_max: torch.Tensor, alpha: float | None
) -> torch.Tensor:
    """``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``; ones for ``alpha=None``."""
    if alpha is None:
        return torch.ones_like(activation_max)
    scales = activation_max.clamp(min=_EPSILON).pow(alpha) / weight_max.clamp(min=_EPSILON).pow(
        1.0 - alpha
    )
    return scales.clamp_(min=_EPSILON, max=1.0 / _EPSILON)


@dataclass(frozen=True)
class _Search:
    """Picks, for one group of layers, the scale with the least expected int8 error.

    Rounding to a grid of step ``d`` adds noise of variance ``d^2 / 12``, independent
    across elements. With ``X' = X / s`` and ``W' = W * s``, the output error of the
    weights is ``sum_i d_i^2 * sum_j E[x_j^2] / s_j^2`` per token (``d_i`` the step of
    output channel ``i``) and that of the activations ``E[d_t^2] * sum_j |W_j|^2 s_j^2``
    (``d_t`` the step of token ``t``); the search minimises their sum.
    """

    fmt: Int8Format
    alphas: tuple[float | None, ...]

    def __call__(
        self,
        activations: torch.Tensor,
        weights: Sequence[torch.Tensor],
        *,
        group: Callable[[torch.Tensor], torch.Tensor] | None = None,
        expand: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, float | None]:
        """``group`` folds per-column statistics into the channels that share a scale
        and ``expand`` spreads those scales back over the columns (identity if absent)."""
        magnitudes = activations.detach().reshape(-1, activations.shape[-1]).float().abs()
        fold = group or (lambda t: t)
        spread = expand or (lambda t: t)
        weight = torch.cat([w.detach().float() for w in weights]).abs_()
        activation_max = fold(magnitudes.amax(dim=0))
        weight_max = fold(weight.amax(dim=0))
        if len(self.alphas) == 1:
            return migration_scales(activation_max, weight_max, self.alphas[0]), self.alphas[0]
        energy = magnitudes.square().mean(dim=0)
        column_energy = weight.square().sum(dim=0)
        best: tuple[float, torch.Tensor, float | None] | None = None
        for alpha in self.alphas:
            scales = migration_scales(activation_max, weight_max, alpha)
            columns = spread(scales)
            weight_steps = self.fmt.weight_steps((weight * columns).amax(dim=1))
            token_steps = self.fmt.activation_steps((magnitudes / columns).amax(dim=1))
            error = float(
                weight_steps.square().sum() * (energy / columns.square()).sum()
                + token_steps.square().mean() * (column_energy * columns.square()).sum()
            )
            if best is None or error < best[0]:
                best = (error, scales, alpha)
        assert best is not None
        return best[1], best[2]


@contextmanager
def _hooks(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class _KvLayout:
    """How ``o_proj``'s input columns map to key/value channels: ``kv_heads`` heads of
    ``head_dim``, each read by ``group`` query heads in a row (as ``repeat_kv`` does)."""

    kv_heads: int
    group: int
    head_dim: int

    @classmethod
    def of(cls, attention: Any) -> _KvLayout:
        head_dim = int(attention.head_dim)
        kv_heads = attention.v_proj.out_features // head_dim
        return cls(kv_heads, attention.o_proj.in_features // (kv_heads * head_dim), head_dim)

    def fold(self, columns: torch.Tensor) -> torch.Tensor:
        """Per-column statistics to per key/value channel (their maximum)."""
        return columns.view(self.kv_heads, self.group, self.head_dim).amax(dim=1).reshape(-1)

    def spread(self, channels: torch.Tensor) -> torch.Tensor:
        """Per key/value channel scales to every column that reads the channel."""
        shape = (self.kv_heads, self.group, self.head_dim)
        return channels.view(self.kv_heads, 1, self.head_dim).expand(shape).reshape(-1)


def calibrate(
    model: Any,
    ids: torch.Tensor,
    fmt: Int8Format,
    *,
    alphas: Sequence[float | None] = DEFAULT_ALPHAS,
) -> MigrationScales:
    """Choose the migration scales of every layer group from one float forward pass
    over ``ids`` (``[batch, n]``, no padding); one value in ``alphas`` is plain
    SmoothQuant with that ``alpha``. The model is not changed."""
    if not alphas:
        raise ValueError("calibration needs at least one alpha (None for no migration)")
    search = _Search(fmt, tuple(alphas))
    found: dict[tuple[int, str], torch.Tensor] = {}
    chosen: list[float | None] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def record(key: tuple[int, str], result: tuple[torch.Tensor, float | None]) -> None:
        found[key] = result[0]
        chosen.append(result[1])

    def on_input(
        key: tuple[int, str], weights: list[torch.Tensor], layout: _KvLayout | None = None
    ) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if layout is None:
                record(key, search(args[0], weights))
            else:
                record(key, search(args[0], weights, group=layout.fold, expand=layout.spread))

        return hook

    for index, layer in enumerate(model.model.layers):
        attention, mlp = layer.self_attn, layer.mlp
        qkv = [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]
        o_hook = on_input((index, "o"), [attention.o_proj.weight], _KvLayout.of(attention))
        gate_up = [mlp.gate_proj.weight, mlp.up_proj.weight]
        handles += [
            attention.q_proj.register_forward_pre_hook(on_input((index, "qkv"), qkv)),
            attention.o_proj.register_forward_pre_hook(o_hook),
            mlp.gate_proj.register_forward_pre_hook(on_input((index, "gate_up"), gate_up)),
            mlp.down_proj.register_forward_pre_hook(
                on_input((index, "down"), [mlp.down_proj.weight])
            ),
        ]

    def on_norm(_m: nn.Module, _args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        record((-1, "lm_head"), search(out, [model.lm_head.weight]))

    handles.append(model.model.norm.register_forward_hook(on_norm))
    with _hooks(handles), torch.inference_mode():
        model.model(input_ids=ids, use_cache=False)
    return MigrationScales(
        layers=tuple(
            LayerScales(
                qkv=found[index, "qkv"],
                o_proj=found[index, "o"],
                gate_up=found[index, "gate_up"],
                down_proj=found[index, "down"],
            )
            for index in range(len(model.model.layers))
        ),
        lm_head=found[-1, "lm_head"],
        alphas=tuple(chosen),
    )


def untie_output_layer(model: Any) -> None:
    """Give ``lm_head`` its own copy of the weight it shares with the input embeddings."""
    embeddings = model.get_input_embeddings()
    if model.lm_head.weight.data_ptr() == embeddings.weight.data_ptr():
        model.lm_head.weight = nn.Parameter(embeddings.weight.detach().clone())
    model.config.tie_word_embeddings = False
    get_text_config = getattr(model.config, "get_text_config", None)
    if get_text_config is not None:
        get_text_config().tie_word_embeddings = False


def _divide_norm(norm: Any, scales: torch.Tensor) -> None:
    norm.weight.div_(scales.to(norm.weight.dtype))
    bias = getattr(norm, "bias", None)
    if bias is not None:
        bias.div_(scales.to(bias.dtype))


def _divide_rows(linear: nn.Linear, scales: torch.Tensor) -> None:
    linear.weight.div_(scales.to(linear.weight.dtype).unsqueeze(1))
    if linear.bias is not None:
        linear.bias.div_(scales.to(linear.bias.dtype))


def _multiply_columns(linear: nn.Linear, scales: torch.Tensor) -> None:
    linear.weight.mul_(scales.to(linear.weight.dtype).unsqueeze(0))


def migrate(model: Any, scales: MigrationScales) -> None:
    """Apply the exact rescalings of the module docstring to ``model`` in place (and
    untie ``lm_head``)."""
    with torch.no_grad():
        for layer, found in zip(model.model.layers, scales.layers, strict=True):
            attention, mlp = layer.self_attn, layer.mlp
            _divide_norm(layer.input_layernorm, found.qkv)
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
                _multiply_columns(projection, found.qkv)

            _divide_rows(attention.v_proj, found.o_proj)
            _multiply_columns(attention.o_proj, _KvLayout.of(attention).spread(found.o_proj))

            _divide_norm(layer.post_attention_layernorm, found.gate_up)
            for projection in (mlp.gate_proj, mlp.up_proj):
                _multiply_columns(projection, found.gate_up)

            _divide_rows(mlp.up_proj, found.down_proj)
            _multiply_columns(mlp.down_proj, found.down_proj)

        untie_output_layer(model)
        _divide_norm(model.model.norm, scales.lm_head)
        _multiply_columns(model.lm_head, scales.lm_head)


def smooth(
    model: Any,
    tokenizer: Any,
    fmt: Int8Format,
    *,
    alphas: Sequence[float | None] = DEFAULT_ALPHAS,
) -> MigrationScales:
    """Calibrate on the packaged text and migrate the scales of ``model`` in place."""
    scales = calibrate(model, calibration_ids(tokenizer), fmt, alphas=alphas)
    migrate(model, scales)
    return scales
