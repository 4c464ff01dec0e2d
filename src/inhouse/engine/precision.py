"""Model precision: float32, bfloat16, or int8 (smoothed int8 Linear layers on the CPU).

int8 replaces the Linear layers by those of ``int8_layers``: weights in int8 per output
channel, activations quantised to int8 at run time, each token on its own scale, and
projections that read one input in one kernel call. Before that, for decoders of the
Llama layout, ``smoothing`` migrates activation outliers into the weights (exact up
to float32 rounding), calibrated once at load time on a text shipped with the package.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from inhouse.config import Precision
from inhouse.engine.int8_layers import INT8_FORMAT, quantise_linear_layers
from inhouse.engine.smoothing import smooth, supports_smoothing
from inhouse.errors import ConfigurationError

# Without smoothing (layouts it does not know), these layers' inputs carry outliers
# that int8 activations cannot hold: they stay float32.
_KEEP_FLOAT_UNSMOOTHED = ("down_proj", "lm_head")


def torch_dtype(precision: Precision) -> torch.dtype:
    """The dtype to load weights in (int8 quantises after a float32 load)."""
    return torch.bfloat16 if precision is Precision.BFLOAT16 else torch.float32


def apply_precision(model: Any, precision: Precision, tokenizer: Any) -> Any:
    """Make a float32-loaded ``model`` run at ``precision``, in place (float32 and
    bfloat16 are chosen at load time: see ``torch_dtype``).

    For int8, a Llama-layout decoder is smoothed first, calibrated on the packaged text
    through ``tokenizer`` (the model's own), and then every
    Linear layer, the output layer included, becomes int8; other layouts keep
    ``down_proj`` and ``lm_head`` in float32.
    """
    if precision is not Precision.INT8:
        return model
    if next(model.parameters()).device.type != "cpu":
        raise ConfigurationError("int8 quantisation runs on the CPU only")
    if supports_smoothing(model):
        smooth(model, tokenizer, INT8_FORMAT)
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
