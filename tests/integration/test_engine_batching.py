"""The batching engine, in-process on the built-in model: outputs equal the model's
own greedy generation while requests join and leave, and int8 keeps its quality."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inhouse.config import EngineSettings, Precision
from inhouse.engine.base import ChatMessage, GenerationRequest, SamplingParams, Share
from inhouse.engine.batch import RunningBatch, prefill_groups
from inhouse.engine.local import LocalEngine
from inhouse.engine.precision import apply_precision
from inhouse.engine.quality import perplexity
from inhouse.registry.models import BUILTIN_MODEL_NAME
from tests.conftest import REPO, shared_models_dir

MODEL_DIR = shared_models_dir() / BUILTIN_MODEL_NAME
QUESTIONS = [
    "Which city is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one paragraph.",
    "What is 17 times 23?",
    "List three uses of copper.",
    "Describe a rainy day in a small town.",
]


@pytest.fixture(scope="module")
def reference() -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    return model, tokenizer


def generate_alone(model: Any, tokenizer: Any, question: str, max_tokens: int) -> str:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    return str(tokenizer.decode(out[0][len(ids) :], skip_special_tokens=True))


def request(question: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        request_id=question,
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        messages=(ChatMessage("user", question),),
    )


def test_greedy_output_under_batching_equals_generate(reference: tuple[Any, Any]) -> None:
    model, tokenizer = reference
    lengths = [48, 48, 12, 48, 30, 48]  # the third and fifth leave early
    expected = [
        generate_alone(model, tokenizer, q, n) for q, n in zip(QUESTIONS, lengths, strict=True)
    ]

    async def scenario() -> list[str]:
        engine = LocalEngine(BUILTIN_MODEL_NAME, lambda: MODEL_DIR, EngineSettings())
        await engine.wait_ready()

        async def run(index: int, delay: float) -> str:
            await asyncio.sleep(delay)  # requests join while others are mid-stream
            prepared = await engine.prepare(request(QUESTIONS[index], lengths[index]))
            return "".join([chunk.text async for chunk in prepared.stream()])

        async def abandon() -> str:
            prepared = await engine.prepare(request("Tell me a long story.", 200))
            stream = prepared.stream()
            for _ in range(3):
                await anext(stream)
            await stream.aclose()  # a client goes away while the others run
            return ""

        results = await asyncio.gather(
            *(run(i, 0.15 * i) for i in range(len(QUESTIONS))), abandon()
        )
        await engine.close()
        return list(results[:-1])

    assert asyncio.run(scenario()) == expected


def test_a_preempted_sequence_resumes_exactly_where_it_stopped(
    reference: tuple[Any, Any],
) -> None:
    """A tenant alone takes both slots; when another tenant arrives, the first one's
    newest sequence is preempted for fairness and later prefilled again with its output:
    every answer still equals ``generate``'s."""
    model, tokenizer = reference
    plan = [("a", QUESTIONS[0], 48), ("a", QUESTIONS[1], 48), ("b", QUESTIONS[3], 16)]
    expected = [generate_alone(model, tokenizer, q, n) for _, q, n in plan]

    async def scenario() -> tuple[list[str], int]:
        settings = EngineSettings(max_running_sequences=2)
        engine = LocalEngine(BUILTIN_MODEL_NAME, lambda: MODEL_DIR, settings, max_share=0.5)
        await engine.wait_ready()
        preempted = 0

        async def run(index: int) -> str:
            nonlocal preempted
            group, question, max_tokens = plan[index]
            generation = GenerationRequest(
                request_id=question,
                params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
                messages=(ChatMessage("user", question),),
                share=Share(group),
            )
            prepared = await engine.prepare(generation)
            return "".join([chunk.text async for chunk in prepared.stream()])

        first = [asyncio.create_task(run(0)), asyncio.create_task(run(1))]
        await asyncio.sleep(0.5)  # a holds both slots and is mid-answer
        assert engine.scheduler is not None
        assert engine.scheduler.running_by_group() == {"a": 2}
        late = asyncio.create_task(run(2))
        await asyncio.sleep(0.3)
        preempted = engine.scheduler.waiting_by_group().get("a", 0)
        results = await asyncio.gather(*first, late)
        await engine.close()
        return list(results), preempted

    results, preempted = asyncio.run(scenario())
    assert preempted == 1
    assert results == expected


def test_prompts_prefilled_together_decode_like_generate(reference: tuple[Any, Any]) -> None:
    """Newcomers of one step are prefilled as left-padded groups; each still continues
    exactly as ``generate`` does alone."""
    model, tokenizer = reference
    steps = 24
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for question in QUESTIONS
    ]
    eos = model.generation_config.eos_token_id
    with torch.inference_mode():
        expected = []
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), max_new_tokens=steps, do_sample=False)
            expected.append(out[0, len(ids) :].tolist())
        batch = RunningBatch(model)
        first = batch.prefill([(seq_id, ids) for seq_id, ids in enumerate(prompts)])
        assert len(prefill_groups(list(enumerate(prompts)))) < len(prompts)  # some shared
        produced = {seq_id: [int(logits.argmax())] for seq_id, logits in first.items()}
        for _ in range(steps - 1):
            batch.set_next_tokens({seq_id: tokens[-1] for seq_id, tokens in produced.items()})
            logits = batch.decode()
            assert bool(torch.isfinite(logits).all())
            for row, seq_id in enumerate(batch.seq_ids):
                produced[seq_id].append(int(logits[row].argmax()))
    for seq_id, tokens in produced.items():
        wanted = expected[seq_id]
        until_eos = tokens[: tokens.index(eos) + 1] if eos in tokens else tokens
        assert until_eos[: len(wanted)] == wanted, seq_id


def test_an_abandoned_stream_leaves_the_batch() -> None:
    async def scenario() -> int:
        engine = LocalEngine(BUILTIN_MODEL_NAME, lambda: MODEL_DIR, EngineSettings())
        await engine.wait_ready()
        prepared = await engine.prepare(request("Tell me a long story.", 300))
        stream = prepared.stream()
        await anext(stream)
        await stream.aclose()
        await asyncio.sleep(1.0)  # many steps' worth
        assert engine.scheduler is not None
        running = engine.scheduler.running
        await engine.close()
        return running

    assert asyncio.run(scenario()) == 0


def test_int8_perplexity_stays_near_float32(reference: tuple[Any, Any]) -> None:
    """int8 (smoothed, per-token activations) measures 61.75 against float32's 59.82
    (+3.2%) on this held-out text, which calibration never sees; the bound is the +5%
    target of the engine issue (docs/benchmarks.md)."""
    model, tokenizer = reference
    text = (REPO / "tests" / "data" / "heldout.txt").read_text()
    float32 = perplexity(model, tokenizer, text)
    quantised = apply_precision(
        AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval(),
        Precision.INT8,
        tokenizer,
    )
    int8 = perplexity(quantised, tokenizer, text)
    assert 1.0 < float32 < 100.0
    assert int8 <= float32 * 1.05, (float32, int8)


def test_each_precision_answers_correctly() -> None:
    async def answer(precision: Precision) -> str:
        engine = LocalEngine(
            BUILTIN_MODEL_NAME, lambda: MODEL_DIR, EngineSettings(), precision=precision
        )
        prepared = await engine.prepare(request(QUESTIONS[0], 12))
        text = "".join([chunk.text async for chunk in prepared.stream()])
        await engine.close()
        return text

    for precision in Precision:
        assert "Paris" in asyncio.run(answer(precision)), precision
