"""Scale migration for int8: exact in float32, deterministic, and the int8 layer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from inhouse.config import Precision
from inhouse.engine import smoothing
from inhouse.engine.int8_layers import INT8_FORMAT, Int8Linear, quantise_linear_layers
from inhouse.engine.precision import apply_precision
from inhouse.registry.models import BUILTIN_MODEL_NAME
from tests.conftest import REPO, shared_models_dir

SIZES: dict[str, Any] = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention: two query heads per kv head
    "head_dim": 16,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),  # with q/k/v biases
}


def tiny_model(family: str = "llama", seed: int = 0, vocab_size: int | None = None) -> Any:
    """A random decoder whose norms carry outlier channels, as trained models' do."""
    config_class, model_class = FAMILIES[family]
    torch.manual_seed(seed)
    sizes = SIZES if vocab_size is None else {**SIZES, "vocab_size": vocab_size}
    model = model_class(config_class(**sizes)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
                parameter[torch.randint(0, parameter.numel(), (3,))] *= 30.0
            elif name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
    return model


def token_ids(seed: int = 1, length: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, SIZES["vocab_size"], (1, length), generator=generator)


def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def random_scales(model: Any, seed: int = 2) -> smoothing.MigrationScales:
    generator = torch.Generator().manual_seed(seed)

    def draw(size: int) -> torch.Tensor:
        return torch.exp(torch.empty(size).uniform_(-2.0, 2.0, generator=generator))

    hidden = SIZES["hidden_size"]
    kv_channels = SIZES["num_key_value_heads"] * SIZES["head_dim"]
    layers = tuple(
        smoothing.LayerScales(
            qkv=draw(hidden),
            o_proj=draw(kv_channels),
            gate_up=draw(hidden),
            down_proj=draw(SIZES["intermediate_size"]),
        )
        for _ in model.model.layers
    )
    return smoothing.MigrationScales(layers=layers, lm_head=draw(hidden), alphas=())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_migration_with_any_positive_scales_keeps_the_logits(family: str) -> None:
    model = tiny_model(family)
    ids = token_ids()
    before = logits(model, ids)
    smoothing.migrate(model, random_scales(model))
    torch.testing.assert_close(logits(model, ids), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_calibrated_migration_keeps_the_logits(family: str) -> None:
    model = tiny_model(family)
    assert smoothing.supports_smoothing(model)
    ids = token_ids()
    before = logits(model, ids)
    scales = smoothing.calibrate(model, ids, INT8_FORMAT)
    smoothing.migrate(model, scales)
    after = logits(model, ids)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert any(alpha is not None for alpha in scales.alphas)  # something did move


def test_scales_are_finite_and_positive_for_every_alpha() -> None:
    model = tiny_model()
    for alphas in [smoothing.DEFAULT_ALPHAS, (0.0,), (0.5,), (1.0,)]:
        scales = smoothing.calibrate(model, token_ids(), INT8_FORMAT, alphas=alphas)
        tensors = [scales.lm_head] + [
            t for layer in scales.layers for t in (layer.qkv, layer.o_proj, layer.gate_up)
        ]
        tensors += [layer.down_proj for layer in scales.layers]
        for tensor in tensors:
            assert bool(torch.isfinite(tensor).all()) and bool((tensor > 0).all())
        assert scales.layers[0].o_proj.shape == (SIZES["num_key_value_heads"] * SIZES["head_dim"],)


def test_calibration_is_deterministic() -> None:
    first = smoothing.calibrate(tiny_model(), token_ids(), INT8_FORMAT)
    second = smoothing.calibrate(tiny_model(), token_ids(), INT8_FORMAT)
    assert first.alphas == second.alphas
    for one, other in zip(first.layers, second.layers, strict=True):
        for name in ("qkv", "o_proj", "gate_up", "down_proj"):
            assert torch.equal(getattr(one, name), getattr(other, name))
    assert torch.equal(first.lm_head, second.lm_head)


def test_calibration_does_not_change_the_model() -> None:
    model = tiny_model()
    state = copy.deepcopy(model.state_dict())
    smoothing.calibrate(model, token_ids(), INT8_FORMAT)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_untying_keeps_outputs_and_separates_the_weights() -> None:
    model = tiny_model()
    ids = token_ids()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    before = logits(model, ids)
    smoothing.untie_output_layer(model)
    torch.testing.assert_close(logits(model, ids), before, rtol=0, atol=0)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.config.tie_word_embeddings is False
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_calibration_text_ships_and_is_not_the_heldout_text() -> None:
    text = smoothing.calibration_text()
    assert len(text) > 2000
    assert any("\u4e00" <= char <= "\u9fff" for char in text)  # some Chinese
    assert "def " in text  # some code
    heldout = (REPO / "tests" / "data" / "heldout.txt").read_text()
    sentences = {s.strip() for s in heldout.replace("\n", " ").split(".") if len(s.strip()) > 20}
    assert not any(sentence in text for sentence in sentences)


def test_apply_precision_int8_quantises_every_linear_and_smoothing_helps() -> None:
    tokenizer = AutoTokenizer.from_pretrained(shared_models_dir() / BUILTIN_MODEL_NAME)
    model = tiny_model(vocab_size=len(tokenizer))
    reference = copy.deepcopy(model)
    ids = tokenizer("The ferry leaves at seven; 渡轮七点出发。", return_tensors="pt").input_ids
    apply_precision(model, Precision.INT8, tokenizer)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, Int8Linear)
    unsmoothed = quantise_linear_layers(copy.deepcopy(reference))
    expected = logits(reference, ids)

    def error(quantised: Any) -> float:
        return float((logits(quantised, ids) - expected).abs().max() / expected.abs().max())

    assert error(model) < error(unsmoothed) < 0.2
    assert apply_precision(reference, Precision.FLOAT32, tokenizer) is reference


def test_calibration_refuses_an_empty_choice_of_alphas() -> None:
    with pytest.raises(ValueError, match="at least one alpha"):
        smoothing.calibrate(tiny_model(), token_ids(), INT8_FORMAT, alphas=())
