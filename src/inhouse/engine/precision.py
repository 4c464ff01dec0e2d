"""Model precision: float32, bfloat16, or int8 (dynamic quantisation of Linear layers)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from inhouse.config import Precision
from inhouse.errors import ConfigurationError


def torch_dtype(precision: Precision) -> torch.dtype:
    """The dtype to load weights in (int8 quantises after a float32 load)."""
    return torch.bfloat16 if precision is Precision.BFLOAT16 else torch.float32


# Layers whose inputs carry large activation outliers: quantising them (dynamic int8
# quantises activations per tensor) costs most of the quality. Measured on the built-in
# model: all Linear layers in int8 gave perplexity +171%; without these, +12% at 1.75x
# the float32 single-stream speed (docs/benchmarks.md).
_KEEP_FLOAT = ("down_proj", "lm_head")


def apply_precision(model: Any, precision: Precision) -> Any:
    if precision is not Precision.INT8:
        return model
    if next(model.parameters()).device.type != "cpu":
        raise ConfigurationError("int8 dynamic quantisation runs on the CPU only")
    # torch.ao's dynamic quantisation is deprecated but remains the fastest int8 path on
    # a CPU without torch.compile: Linear weights become int8 (per output channel).
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    layers = {
        name: qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(_KEEP_FLOAT)
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.ao.quantization.quantize_dynamic(model, layers, dtype=torch.qint8, inplace=True)
    return model


def kv_bytes_per_token(config: Any, precision: Precision) -> int:
    """Memory of one token's keys and values across all layers."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = 2 if precision is Precision.BFLOAT16 else 4
    return int(config.num_hidden_layers * 2 * heads * head_dim * element)


def available_memory_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
