"""The in-process engine: a transformers causal LM on this machine.

First version: each admitted request runs its own decode loop (prefill, then one
token per step with a KV cache) in a worker thread, so the event loop never
blocks. A semaphore bounds concurrent generations, and so memory; a bounded
waiting line answers 429 when full. Chunks flow to the event loop through a queue;
a consumer that goes away cancels its loop within one step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from inhouse.config import EngineSettings
from inhouse.engine.base import (
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    SamplingParams,
    TokenUsage,
)
from inhouse.engine.sampling import make_generator, next_token
from inhouse.engine.text_stream import StopStringStream
from inhouse.errors import (
    ContextLengthExceededError,
    EngineUnavailableError,
    InvalidRequestError,
    RateLimitError,
)

log = logging.getLogger(__name__)

Emit = Callable[[GenerationChunk | BaseException | None], None]


class LocalEngine:
    def __init__(
        self, name: str, resolve_dir: Callable[[], Path], settings: EngineSettings
    ) -> None:
        self.name = name
        self._resolve_dir = resolve_dir
        self._settings = settings
        self._loaded = asyncio.Event()
        self._load_error: BaseException | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrent_generations)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_generations, thread_name_prefix=f"engine-{name}"
        )
        self._active = 0
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self.context_length = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Begin loading the weights in a worker thread."""
        if self._load_task is None:
            self._load_task = asyncio.create_task(self._load_in_thread())

    async def _load_in_thread(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except Exception as exc:
            log.exception("model %s failed to load", self.name)
            self._load_error = exc
        finally:
            self._loaded.set()

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        if self._settings.threads:
            torch.set_num_threads(self._settings.threads)
        directory = self._resolve_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, local_files_only=True
        )
        self._model = model.eval()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            eos_ids.add(self._tokenizer.eos_token_id)
        self._eos_ids = frozenset(eos_ids)
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        log.info("model %s loaded from %s", self.name, directory)

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self._load_error is None

    @property
    def load_error(self) -> BaseException | None:
        return self._load_error

    async def wait_ready(self) -> None:
        self.start()
        await self._loaded.wait()
        if self._load_error is not None:
            raise EngineUnavailableError(f"model {self.name!r} failed to load")

    async def close(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            await self._load_task
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- requests ---------------------------------------------------------------------
    async def prepare(self, request: GenerationRequest) -> LocalGeneration:
        """Tokenise and validate; refuse at once when the waiting line is full."""
        await self.wait_ready()
        limit = self._settings.max_concurrent_generations + self._settings.max_waiting_requests
        if self._active >= limit:
            raise RateLimitError(
                f"model {self.name!r} is at capacity ({limit} requests running or waiting); "
                "retry shortly",
                retry_after_seconds=1.0,
                code="engine_overloaded",
            )
        prompt_ids = await asyncio.to_thread(self._encode, request)
        room = self.context_length - len(prompt_ids)
        if room <= 0:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {self.context_length} tokens; "
                f"the prompt has {len(prompt_ids)} tokens.",
                param="messages" if request.messages else "prompt",
            )
        wanted = request.params.max_tokens or self._settings.default_max_tokens
        return LocalGeneration(self, prompt_ids, min(wanted, room), request.params)

    def _encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt is not None:
            return list(self._tokenizer(request.prompt).input_ids)
        if not self._tokenizer.chat_template:
            raise InvalidRequestError(
                f"model {self.name!r} has no chat template; use /v1/completions", param="model"
            )
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        ids = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids)

    def _decode_ids(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def _run(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        params: SamplingParams,
        emit: Emit,
        cancelled: threading.Event,
    ) -> None:
        generator = make_generator(params)
        text = StopStringStream(self._decode_ids, params.stop)
        finish = FinishReason.LENGTH
        completion_tokens = 0
        tail = ""
        with torch.inference_mode():
            out = self._model(
                input_ids=torch.tensor([prompt_ids]), use_cache=True, logits_to_keep=1
            )
            for _ in range(max_tokens):
                token = next_token(out.logits[0, -1], params, generator)
                completion_tokens += 1
                if token in self._eos_ids:
                    finish = FinishReason.STOP
                    tail = text.finish()
                    break
                delta = text.add(token)
                if delta.text:
                    emit(GenerationChunk(delta.text))
                if delta.stopped:
                    finish = FinishReason.STOP
                    break
                if cancelled.is_set():
                    finish = FinishReason.CANCELLED
                    break
                out = self._model(
                    input_ids=torch.tensor([[token]]),
                    cache=out.cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
            else:
                tail = text.finish()
        usage = TokenUsage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)
        emit(GenerationChunk(tail, finish_reason=finish, usage=usage))


class LocalGeneration:
    """One admitted request; ``stream()`` runs it."""

    def __init__(
        self, engine: LocalEngine, prompt_ids: list[int], max_tokens: int, params: SamplingParams
    ) -> None:
        self._engine = engine
        self._prompt_ids = prompt_ids
        self._max_tokens = max_tokens
        self._params = params

    @property
    def prompt_tokens(self) -> int:
        return len(self._prompt_ids)

    async def stream(self) -> AsyncIterator[GenerationChunk]:
        engine = self._engine
        engine._active += 1
        try:
            async with engine._slots:
                async for chunk in self._run_in_thread():
                    yield chunk
        finally:
            engine._active -= 1

    async def _run_in_thread(self) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: GenerationChunk | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                self._engine._run(self._prompt_ids, self._max_tokens, self._params, emit, cancelled)
            except BaseException as exc:
                emit(exc)
            finally:
                emit(None)

        future = loop.run_in_executor(self._engine._executor, work)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    log.error("generation failed", exc_info=item)
                    raise EngineUnavailableError("generation failed on this model") from item
                yield item
        finally:
            cancelled.set()
            await asyncio.wait([future])
