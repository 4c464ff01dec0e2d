"""The in-process engine: a transformers causal LM with continuous batching.

``prepare`` admits a request into the scheduler at once (or refuses it with 429
before anything is sent). One async loop asks the scheduler for a plan, runs the
step in the model's worker thread (drop cancelled rows, decode the running batch,
prefill newcomers) and routes each sequence's text to its consumer. Requests join
between steps and leave as soon as they finish; a consumer that goes away is
dropped at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from inhouse.config import EngineSettings, Precision
from inhouse.engine.base import GenerationChunk, GenerationRequest, GroupLoad
from inhouse.engine.batch import RunningBatch
from inhouse.engine.precision import (
    apply_precision,
    available_memory_bytes,
    kv_bytes_per_token,
    torch_dtype,
)
from inhouse.engine.scheduler import Scheduler, SchedulerLimits, SequenceSpec
from inhouse.engine.sequence import SequenceState, ThroughputMeter
from inhouse.errors import (
    ContextLengthExceededError,
    EngineUnavailableError,
    InvalidRequestError,
)
from inhouse.protocol.types import Priority

log = logging.getLogger(__name__)

Event = tuple[int, GenerationChunk]
_KV_MEMORY_SHARE = 0.2
_MAX_DEFAULT_TOKENS_IN_FLIGHT = 64 * 1024


class LocalEngine:
    def __init__(
        self,
        name: str,
        resolve_dir: Callable[[], Path],
        settings: EngineSettings,
        *,
        precision: Precision | None = None,
        max_share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._max_share = max_share
        self.precision = precision or settings.dtype
        self._resolve_dir = resolve_dir
        self._settings = settings
        self._clock = clock
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._load_error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        self._sequences: dict[int, SequenceState] = {}
        self._next_seq_id = 0
        self._scheduler: Scheduler | None = None
        self._batch: RunningBatch | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self.context_length = 0
        self.throughput = ThroughputMeter()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Begin loading the weights in the worker thread; the step loop starts after."""
        if not self._tasks:
            self._tasks.append(
                asyncio.create_task(self._load_then_run(), name=f"engine-{self.name}")
            )

    async def _load_then_run(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except Exception as exc:
            log.exception("model %s failed to load", self.name)
            self._load_error = exc
            return
        finally:
            self._loaded.set()
        await self._run_steps()

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if self._settings.threads:
            torch.set_num_threads(self._settings.threads)
        directory = self._resolve_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch_dtype(self.precision), local_files_only=True
        )
        self._model = apply_precision(model.eval(), self.precision, self._tokenizer)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            eos_ids.add(self._tokenizer.eos_token_id)
        self._eos_ids = frozenset(eos_ids)
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self._scheduler = Scheduler(self._limits(model.config))
        self._batch = RunningBatch(self._model)
        log.info(
            "model %s loaded from %s (%s, up to %d tokens in flight)",
            self.name,
            directory,
            self.precision.value,
            self._scheduler.limits.max_tokens_in_flight,
        )

    def _limits(self, config: Any) -> SchedulerLimits:
        tokens = self._settings.max_tokens_in_flight
        if tokens is None:
            by_memory = int(
                available_memory_bytes()
                * _KV_MEMORY_SHARE
                / kv_bytes_per_token(config, self.precision)
            )
            tokens = max(self.context_length, min(by_memory, _MAX_DEFAULT_TOKENS_IN_FLIGHT))
        return SchedulerLimits(
            max_running=self._settings.max_running_sequences,
            max_tokens_in_flight=tokens,
            max_waiting=self._settings.max_waiting_requests,
            max_prefill_tokens_per_step=self._settings.max_prefill_tokens_per_step,
            max_share=self._max_share,
        )

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self._load_error is None

    @property
    def scheduler(self) -> Scheduler | None:
        return self._scheduler

    def load_by_group(self) -> dict[str, GroupLoad]:
        scheduler = self._scheduler
        if scheduler is None:
            return {}
        running, waiting = scheduler.running_by_group(), scheduler.waiting_by_group()
        return {
            group: GroupLoad(running.get(group, 0), waiting.get(group, 0))
            for group in running.keys() | waiting.keys()
        }

    async def wait_ready(self) -> None:
        self.start()
        await self._loaded.wait()
        if self._load_error is not None:
            raise EngineUnavailableError(f"model {self.name!r} failed to load")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sequence in self._sequences.values():
            sequence.fail(EngineUnavailableError(f"model {self.name!r} was unloaded"))
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    # -- requests ---------------------------------------------------------------------
    async def prepare(
        self, request: GenerationRequest, priority: Priority = Priority.NORMAL
    ) -> LocalGeneration:
        """Tokenise, check the context, and admit; a full engine refuses here (429)."""
        await self.wait_ready()
        prompt_ids = await asyncio.to_thread(self._encode, request)
        room = self.context_length - len(prompt_ids)
        if room <= 0:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self.context_length} tokens; "
                f"the prompt has {len(prompt_ids)} tokens.",
                param="messages" if request.messages else "prompt",
            )
        max_tokens = min(request.params.max_tokens or self._settings.default_max_tokens, room)
        assert self._scheduler is not None
        seq_id = self._next_seq_id
        self._next_seq_id += 1
        share = request.share
        spec = SequenceSpec(
            seq_id, len(prompt_ids), max_tokens, priority, group=share.group, weight=share.weight
        )
        self._scheduler.add(spec, self._clock())  # raises before anything is registered
        sequence = SequenceState(
            seq_id, prompt_ids, max_tokens, request.params, self._eos_ids, self._decode_ids
        )
        self._sequences[seq_id] = sequence
        self._wake.set()
        return LocalGeneration(self, sequence)

    def _cancel(self, seq_id: int) -> None:
        """The consumer went away: forget a waiting sequence, drop a running one next step."""
        if self._scheduler is not None and seq_id in self._sequences:
            if self._scheduler.cancel(seq_id):
                del self._sequences[seq_id]
            self._wake.set()

    def _encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt is not None:
            return list(self._tokenizer(request.prompt).input_ids)
        if not self._tokenizer.chat_template:
            raise InvalidRequestError(
                f"model {self.name!r} has no chat template; use /v1/completions", param="model"
            )
        from jinja2 import TemplateError

        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            ids = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except TemplateError as exc:
            raise InvalidRequestError(
                f"the model's chat template refused these messages: {exc}", param="messages"
            ) from None
        return list(ids)

    def _decode_ids(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    # -- the step loop ----------------------------------------------------------------
    async def _run_steps(self) -> None:
        assert self._scheduler is not None
        loop = asyncio.get_running_loop()
        while True:
            plan = self._scheduler.schedule(self._clock())
            if plan.empty:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                events = await loop.run_in_executor(self._executor, self._step, plan)
            except Exception as exc:
                log.exception("engine step failed; failing the running requests")
                self._fail_running(exc)
                continue
            for seq_id in plan.drop:
                self._sequences.pop(seq_id, None)
            finished = []
            for seq_id, chunk in events:
                sequence = self._sequences.get(seq_id)
                if sequence is not None:
                    sequence.deliver(chunk)
                if chunk.finish_reason is not None:
                    finished.append(seq_id)
                    self._sequences.pop(seq_id, None)
            self._scheduler.update(finished)
            self.throughput.add(self._clock(), len(events))

    def _step(self, plan: Any) -> list[Event]:
        """One model step, in the worker thread: drop, decode, prefill."""
        batch = self._batch
        assert batch is not None
        events: list[Event] = []
        next_tokens: dict[int, int] = {}
        finished: set[int] = set()

        def accept(seq_id: int, token: int) -> None:
            chunk = self._sequences[seq_id].accept(token)
            events.append((seq_id, chunk))
            if chunk.finish_reason is None:
                next_tokens[seq_id] = token
            else:
                finished.add(seq_id)

        with torch.inference_mode():
            if plan.drop or plan.preempt:
                batch.remove({*plan.drop, *plan.preempt})
            if len(batch):
                logits = batch.decode()
                greedy = logits.argmax(dim=-1).tolist()
                for row, seq_id in enumerate(batch.seq_ids):
                    sequence = self._sequences[seq_id]
                    token = greedy[row] if sequence.greedy else sequence.sample(logits[row])
                    accept(seq_id, token)
            if plan.prefill:
                prompts = [(seq_id, self._sequences[seq_id].prefill_ids) for seq_id in plan.prefill]
                last_logits = batch.prefill(prompts)
                for seq_id in plan.prefill:
                    accept(seq_id, self._sequences[seq_id].sample(last_logits[seq_id]))
            batch.set_next_tokens(next_tokens)
            if finished:
                batch.remove(finished)
        return events

    def _fail_running(self, exc: BaseException) -> None:
        assert self._scheduler is not None and self._batch is not None
        failed = list(self._batch.seq_ids)
        for seq_id in failed:
            sequence = self._sequences.pop(seq_id, None)
            if sequence is not None:
                sequence.fail(EngineUnavailableError("generation failed on this model"))
        self._scheduler.update(failed)
        self._batch = RunningBatch(self._model)


class LocalGeneration:
    """One admitted request; ``stream()`` yields its text as the engine produces it."""

    def __init__(self, engine: LocalEngine, sequence: SequenceState) -> None:
        self._engine = engine
        self._sequence = sequence

    @property
    def prompt_tokens(self) -> int:
        return len(self._sequence.prompt_ids)

    async def stream(self) -> AsyncIterator[GenerationChunk]:
        finished = False
        try:
            while True:
                chunk = await self._sequence.next_chunk()
                yield chunk
                if chunk.finish_reason is not None:
                    finished = True
                    return
        finally:
            if not finished:
                self.cancel()

    def cancel(self) -> None:
        self._engine._cancel(self._sequence.seq_id)
