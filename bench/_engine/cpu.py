"""How much CPU other processes took during a measurement (from ``/proc``, Linux only).

Every number of the engine benchmark assumes it has the machine to itself. A cell records the
machine's busy CPU time minus that of this benchmark's own process tree (servers included), as
an average number of cores; anything well above zero means the cell competed with foreign load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from _engine.mem import descendants

PROC = Path("/proc")
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class CpuMark:
    at: float
    busy_ticks: int
    own_ticks: int


def _machine_busy_ticks() -> int:
    fields = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal


def _process_ticks(pid: int) -> int:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the file)


def mark() -> CpuMark | None:
    """CPU counters now, for this process and everything it started; None without ``/proc``."""
    try:
        busy = _machine_busy_ticks()
    except (OSError, ValueError, IndexError):
        return None
    own = sum(_process_ticks(p) for p in descendants(os.getpid()))
    return CpuMark(time.monotonic(), busy, own)


def foreign_cores(start: CpuMark | None, end: CpuMark | None) -> float | None:
    """Average cores used by other processes between two marks (processes of ours that ended in
    between count as foreign, so take both marks while the measured processes run)."""
    if start is None or end is None or end.at <= start.at:
        return None
    foreign = (end.busy_ticks - start.busy_ticks) - (end.own_ticks - start.own_ticks)
    return max(0.0, foreign / _HZ / (end.at - start.at))


def settle(max_wait_s: float, threshold: float, window_s: float = 2.0) -> float | None:
    """Wait (at most ``max_wait_s``) until other processes use under ``threshold`` cores.

    Returns the last measurement (cores), or None without ``/proc``. A shared machine is often
    busy only for a while; waiting a little gives each cell a better chance of a quiet start.
    """
    deadline = time.monotonic() + max_wait_s
    told = False
    while True:
        start = mark()
        time.sleep(window_s)
        foreign = foreign_cores(start, mark())
        if foreign is None or foreign < threshold or time.monotonic() >= deadline:
            return foreign
        if not told:
            print(
                f"  other processes use {foreign:.2f} cores: waiting up to {max_wait_s:.0f} s",
                flush=True,
            )
            told = True
