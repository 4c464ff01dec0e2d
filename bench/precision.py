"""What each precision of the local engine costs and buys, on the built-in model.

Variants: float32, bfloat16, the int8 of earlier releases (``torch.ao`` dynamic
quantisation: 8-bit weights, 7-bit activations per tensor, keeping ``down_proj`` and
``lm_head`` in float32), that int8 on every Linear layer, SmoothQuant scale migration in
front of it, and the shipped int8 (``Int8Linear``: per-token activations) without
smoothing, with one fixed ``alpha``, and with the per-group ``alpha`` search (with and
without running the projections that share an input in one kernel call). For each,
it prints perplexity on the held-out text of the tests (calibration uses the packaged
calibration text, never that one) and raw decode speed (one model forward per token
with a KV cache) at batch 1 and 16, each as a ratio to float32. All models are built
first; speed rounds then alternate between them, best of three per cell.

    .venv/bin/python bench/precision.py
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from inhouse.config import Precision
from inhouse.engine import smoothing
from inhouse.engine.int8_layers import INT8_FORMAT, quantise_linear_layers
from inhouse.engine.precision import apply_precision
from inhouse.engine.quality import perplexity

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("INHOUSE_MODELS_DIR", REPO / ".cache" / "models")) / (
    "smollm2-135m-instruct"
)
TEXT = (REPO / "tests" / "data" / "heldout.txt").read_text()
STEPS = 32
ROUNDS = 3


def load(dtype: torch.dtype = torch.float32) -> Any:
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=dtype).eval()


def torch_ao_int8(model: Any, keep_float: tuple[str, ...] = ()) -> Any:
    """The int8 of earlier releases: ``quantize_dynamic`` with per-channel weights."""
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    layers = {
        name: qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(keep_float)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, layers, dtype=torch.qint8, inplace=True)
    return model


def smoothed(tokenizer: Any, alphas: tuple[float | None, ...] = smoothing.DEFAULT_ALPHAS) -> Any:
    model = load()
    smoothing.smooth(model, tokenizer, INT8_FORMAT, alphas=alphas)
    return model


def decode_speed(model: Any, batch: int) -> float:
    prompt = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356]] * batch)
    with torch.inference_mode():
        cache = model(input_ids=prompt, use_cache=True).cache
        started = time.perf_counter()
        for _ in range(STEPS):
            out = model(
                input_ids=torch.full((batch, 1), 5), cache=cache, use_cache=True, logits_to_keep=1
            )
            cache = out.cache
    return STEPS * batch / (time.perf_counter() - started)


def variants(tokenizer: Any) -> dict[str, Callable[[], Any]]:
    return {
        "float32": load,
        "bfloat16": lambda: load(torch.bfloat16),
        "int8 before: torch.ao, down_proj and lm_head float32": lambda: torch_ao_int8(
            load(), ("down_proj", "lm_head")
        ),
        "torch.ao int8, every Linear": lambda: torch_ao_int8(load()),
        "torch.ao int8 + SmoothQuant alpha 0.5": lambda: torch_ao_int8(smoothed(tokenizer, (0.5,))),
        "torch.ao int8 + SmoothQuant alpha 0.8": lambda: torch_ao_int8(smoothed(tokenizer, (0.8,))),
        "per-token int8, no smoothing": lambda: quantise_linear_layers(load()),
        "per-token int8 + SmoothQuant alpha 0.5": lambda: quantise_linear_layers(
            smoothed(tokenizer, (0.5,))
        ),
        "per-token int8 + alpha search, one call per layer": lambda: quantise_linear_layers(
            smoothed(tokenizer), share_inputs=False
        ),
        "per-token int8 + alpha search, shared inputs (shipped)": lambda: apply_precision(
            load(), Precision.INT8, tokenizer
        ),
        "shipped, lm_head float32": lambda: quantise_linear_layers(
            smoothed(tokenizer), keep_float=("lm_head",)
        ),
    }


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    console = Console(width=140)
    console.print(f"load average at the start: {os.getloadavg()}")
    models: dict[str, Any] = {}
    quality: dict[str, float] = {}
    for name, build in variants(tokenizer).items():
        started = time.perf_counter()
        models[name] = build()
        built = time.perf_counter() - started
        quality[name] = perplexity(models[name], tokenizer, TEXT)
        console.print(f"{name}: perplexity {quality[name]:.2f}, built in {built:.1f} s")
    speeds: dict[tuple[str, int], float] = {}
    for _ in range(ROUNDS):
        for name, model in models.items():
            for batch in (1, 16):
                speeds[name, batch] = max(
                    speeds.get((name, batch), 0.0), decode_speed(model, batch)
                )
        console.print(f"round done, load average {os.getloadavg()}")
    table = Table(title="precision of the local engine (built-in model, this machine)")
    columns = ("variant", "perplexity", "vs fp32", "tok/s b=1", "ratio", "tok/s b=16", "ratio")
    table.add_column(columns[0], no_wrap=True)
    for column in columns[1:]:
        table.add_column(column, justify="right")
    base = "float32"
    for name in models:
        table.add_row(
            name,
            f"{quality[name]:.2f}",
            f"{quality[name] / quality[base] - 1:+.1%}" if name != base else "-",
            f"{speeds[name, 1]:.1f}",
            f"{speeds[name, 1] / speeds[base, 1]:.2f}x",
            f"{speeds[name, 16]:.1f}",
            f"{speeds[name, 16] / speeds[base, 16]:.2f}x",
        )
    console.print(table)


if __name__ == "__main__":
    main()
