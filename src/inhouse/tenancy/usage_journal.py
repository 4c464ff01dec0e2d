"""The usage journal: every usage event on disk before its response is sent.

Events are appended (one JSON line each) to a segment file that this process holds
locked. When a batch goes to the database the segment is sealed and a new one
started; a sealed segment is deleted once its events are in the database. A
process killed with SIGKILL leaves its segments behind, unlocked: the next start of
any gateway on the same data directory replays them (writes are idempotent), so a
request that was answered always has its usage row. The journal survives a killed
process (the kernel keeps the page cache); with ``fsync`` it survives power loss too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int


class UsageJournal:
    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self._directory = directory
        self._fsync = fsync
        self._current: _Segment | None = None
        self._sealed: list[_Segment] = []
        self._sequence = 0

    def open(self) -> list[dict[str, Any]]:
        """Start a segment; return the records of segments no live process holds."""
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        recovered: list[dict[str, Any]] = []
        for path in sorted(self._directory.glob("*.jsonl")):
            segment = _try_lock(path)
            if segment is None:
                continue  # another running gateway's segment
            records = _read(path)
            if records:
                log.warning("replaying %d usage records from %s", len(records), path.name)
            recovered += records
            self._sealed.append(segment)
        self._current = self._new_segment()
        return recovered

    def append(self, record: dict[str, Any]) -> None:
        assert self._current is not None, "open() the journal first"
        os.write(self._current.fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")
        if self._fsync:
            os.fsync(self._current.fd)

    def seal(self) -> int:
        """Start a new segment; return a mark for ``discard_sealed`` after the write."""
        if self._current is not None:
            fresh = self._new_segment()  # first: if this fails, nothing has moved
            self._sealed.append(self._current)
            self._current = fresh
        return len(self._sealed)

    def discard_sealed(self, mark: int) -> None:
        """Delete the sealed segments up to ``mark``: their records are in the database."""
        done, self._sealed = self._sealed[:mark], self._sealed[mark:]
        for segment in done:
            segment.path.unlink(missing_ok=True)
            os.close(segment.fd)

    def close(self, *, written: bool) -> None:
        """Close; segments whose records are not all written stay for the next start."""
        segments = [*self._sealed, *([self._current] if self._current else [])]
        for segment in segments:
            if written:
                segment.path.unlink(missing_ok=True)
            os.close(segment.fd)
        self._sealed, self._current = [], None

    def _new_segment(self) -> _Segment:
        self._sequence += 1
        name = f"{time.time_ns()}-{os.getpid()}-{self._sequence}.jsonl"
        path = self._directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return _Segment(path, fd)


def _try_lock(path: Path) -> _Segment | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        return None  # its live owner wrote it to the database and deleted it just now
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return _Segment(path, fd)


def _read(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            # A line cut short by a kill: its request never got its response.
            log.warning("skipping unreadable line %d of %s", number, path.name)
    return records
