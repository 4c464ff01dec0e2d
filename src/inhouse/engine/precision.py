"""Model precision: float32, bfloat16, or int8 (smoothed int8 Linear layers on the CPU).

int8 replaces the Linear layers by ``Int8Linear``: weights in int8 per output channel,
activations quantised to int8 at run time, each token on its own scale, through the
fbgemm kernel of ``torch.ao``'s dynamic quantisation. Before that, for decoders of the
Llama layout, ``smoothing`` migrates activation outliers into the weights (exact in
float32), calibrated once at load time on a text shipped with the package.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from inhouse.config import Precision
from inhouse.engine.smoothing import Int8Format, smooth, supports_smoothing
from inhouse.errors import ConfigurationError

# Weights on [-64, 64] and activations on 256 levels: on a CPU without VNNI, the int8
# kernel adds pairs of u8 x s8 products in int16 with saturation, and 2 * 255 * 64 still
# fits. torch.ao's default (8-bit weights, 7-bit "reduce_range" activations) measured
# worse on the built-in model: activations carry the outliers (docs/benchmarks.md).
INT8_FORMAT = Int8Format(weight_max=64, activation_levels=255)
# Without smoothing (layouts it does not know), these layers' inputs carry outliers
# that int8 activations cannot hold: they stay float32.
_KEEP_FLOAT_UNSMOOTHED = ("down_proj", "lm_head")
_TINY = 1e-12


def torch_dtype(precision: Precision) -> torch.dtype:
    """The dtype to load weights in (int8 quantises after a float32 load)."""
    return torch.bfloat16 if precision is Precision.BFLOAT16 else torch.float32


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
        with warnings.catch_warnings():
            # Quantized tensors are deprecated in favour of torchao, which has no CPU int8
            # kernel as fast as fbgemm's dynamic one without torch.compile.
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            # Every row's largest weight lands on +-weight_max: the grid of INT8_FORMAT.
            quantised = torch.quantize_per_channel(
                weight, step.double(), torch.zeros_like(step, dtype=torch.long), 0, torch.qint8
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


def quantise_linear_layers(model: Any, *, keep_float: Iterable[str] = ()) -> Any:
    """Replace ``model``'s Linear layers by ``Int8Linear``, in place, except those whose
    names end with one of ``keep_float``."""
    kept = tuple(keep_float)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full_name = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.Linear) and not full_name.endswith(kept):
                setattr(parent, name, Int8Linear(child))
    return model


def _tokenizer_of(model: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.name_or_path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"int8 calibration needs the tokenizer of {model.name_or_path!r}: {exc}"
        ) from exc


def apply_precision(model: Any, precision: Precision, *, tokenizer: Any = None) -> Any:
    """Make a float32-loaded ``model`` run at ``precision``, in place (float32 and
    bfloat16 are chosen at load time: see ``torch_dtype``).

    For int8, a Llama-layout decoder is smoothed first, calibrated on the packaged text
    through ``tokenizer`` (by default the one saved with the model), and then every
    Linear layer, the output layer included, becomes int8; other layouts keep
    ``down_proj`` and ``lm_head`` in float32.
    """
    if precision is not Precision.INT8:
        return model
    if next(model.parameters()).device.type != "cpu":
        raise ConfigurationError("int8 quantisation runs on the CPU only")
    if supports_smoothing(model):
        smooth(model, tokenizer if tokenizer is not None else _tokenizer_of(model), INT8_FORMAT)
        return quantise_linear_layers(model)
    return quantise_linear_layers(model, keep_float=_KEEP_FLOAT_UNSMOOTHED)


def kv_bytes_per_token(config: Any, precision: Precision) -> int:
    """Memory of one token's keys and values across all layers."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = 2 if precision is Precision.BFLOAT16 else 4
    return int(config.num_hidden_layers * 2 * heads * head_dim * element)


def available_memory_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
