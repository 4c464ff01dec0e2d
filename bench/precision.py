"""What each precision of the local engine costs and buys, on the built-in model.

For float32, bfloat16, the shipped int8 (dynamic int8 Linear layers, keeping
``down_proj`` and ``lm_head`` in float32) and, for comparison, int8 on every Linear
layer, it prints perplexity on the held-out text of the tests and raw decode speed
(one model forward per token with a KV cache) at batch 1 and 16, each as a ratio to
float32 in the same run. Best of three runs per cell.

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
from inhouse.engine.precision import apply_precision
from inhouse.engine.quality import perplexity

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("INHOUSE_MODELS_DIR", REPO / ".cache" / "models")) / (
    "smollm2-135m-instruct"
)
TEXT = (REPO / "tests" / "data" / "heldout.txt").read_text()
STEPS = 32


def load(dtype: torch.dtype = torch.float32) -> Any:
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=dtype).eval()


def int8_everywhere() -> Any:
    model = load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )
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


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    variants: dict[str, Callable[[], Any]] = {
        "float32": load,
        "bfloat16": lambda: load(torch.bfloat16),
        "int8 (shipped)": lambda: apply_precision(load(), Precision.INT8),
        "int8, every Linear": int8_everywhere,
    }
    rows = []
    for name, build in variants.items():
        model = build()
        ppl = perplexity(model, tokenizer, TEXT)
        single = max(decode_speed(model, 1) for _ in range(3))
        batched = max(decode_speed(model, 16) for _ in range(3))
        rows.append((name, ppl, single, batched))
        print(f"{name}: perplexity {ppl:.2f}, {single:.1f} tok/s single, {batched:.1f} at 16")
    base = rows[0]
    table = Table(title="precision of the local engine (built-in model, this machine)")
    columns = ("precision", "perplexity", "vs fp32", "tok/s b=1", "ratio", "tok/s b=16", "ratio")
    for column in columns:
        table.add_column(column, justify="right")
    for name, ppl, single, batched in rows:
        table.add_row(
            name,
            f"{ppl:.2f}",
            f"{ppl / base[1] - 1:+.1%}" if name != "float32" else "-",
            f"{single:.1f}",
            f"{single / base[2]:.2f}x",
            f"{batched:.1f}",
            f"{batched / base[3]:.2f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
