"""Housekeeping that runs in the gateway on a timer: one thread call at a time, logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``job`` in a worker thread at start and every ``interval`` seconds after.

    The job gets a ``should_stop`` callable that turns true when the gateway shuts
    down: a long job (a rewrap) checks it between batches, so shutdown never waits
    for it to finish.
    """

    def __init__(
        self, name: str, job: Callable[[Callable[[], bool]], Any], interval: float
    ) -> None:
        self._name = name
        self._job = job
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._job, self._stopping.is_set)
            except Exception:
                log.exception("%s failed; trying again in %.0f s", self._name, self._interval)
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        self._stopping.set()
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
