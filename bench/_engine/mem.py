"""Memory of a process tree, read from ``/proc/<pid>/status`` (Linux only)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status``; None when unreadable."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (servers may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_bytes(pid: int, field: str) -> int | None:
    """Sum of ``field`` over ``pid`` and its descendants, in bytes; None when unreadable."""
    values = [status_kib(p, field) for p in descendants(pid)]
    known = [v for v in values if v is not None]
    return sum(known) * 1024 if known else None


def reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS for ``pid``'s tree (``clear_refs`` 5); True if done."""
    done = False
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            (PROC / str(p) / "clear_refs").write_text("5")
            done = True
    return done


def own_peak_bytes() -> int | None:
    """This process's ``VmHWM`` in bytes."""
    kib = status_kib(os.getpid(), "VmHWM")
    return kib * 1024 if kib is not None else None
