"""Child-process bookkeeping and loopback HTTP probes for the gateway benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# Loopback only: never send the benchmark's own probes through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LOOPBACK_NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


class Children:
    """The processes this benchmark started; ``kill_all`` ends each one's process group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._logs: list[IO[Any]] = []

    def spawn(
        self, cmd: list[str], env: dict[str, str], cwd: Path, log: Path | None = None
    ) -> subprocess.Popen[Any]:
        """Start ``cmd`` as its own process group, output to ``log`` (a pipe when None)."""
        out: Any = subprocess.PIPE
        if log is not None:
            out = log.open("wb")
            self._logs.append(out)
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
        """SIGTERM the process group of ``proc``, then SIGKILL it after ``grace_s``."""
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        # Workers a server forked may outlive it: kill whatever is left of its group.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=grace_s)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc in self._procs:
            self._procs.remove(proc)

    def kill_all(self) -> None:
        for proc in list(reversed(self._procs)):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.stop(proc)
        for log in self._logs:
            log.close()
        self._logs.clear()


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def supervised(prefix: str) -> Iterator[tuple[Children, Path]]:
    """Children and a scratch directory for one benchmark run.

    SIGTERM ends the run like an exception, and every child is killed before the
    scratch directory is removed, however the run ends.
    """
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    children = Children()
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        try:
            yield children, Path(scratch)
        finally:
            children.kill_all()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout_s: float = 2.0) -> int | None:
    """Status of a GET on ``url``; None when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout_s: float) -> str | None:
    """Poll ``url`` until 200; returns None when ready, else why not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"process exited with code {proc.returncode}"
        if http_status(url) == 200:
            return None
        time.sleep(0.25)
    return f"{url} not ready after {timeout_s:.0f} s"


def post_json(url: str, payload: dict[str, Any], key: str, timeout_s: float = 30.0) -> str | None:
    """One chat completion; returns None when it worked, else a short error."""
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:300]!r}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        ok = bool(json.loads(body).get("choices"))
    except (ValueError, AttributeError):
        ok = False
    return None if ok else f"unexpected answer: {body[:300]!r}"


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
