"""Run a real ``inhouse serve`` (uvicorn, SQLite or PostgreSQL, the built-in model) in a
subprocess on a free port, and the ``inhouse`` CLI against the same data directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import shared_models_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InhouseProcess:
    def __init__(self, data_dir: Path, *, builtin_model: bool = True, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "INHOUSE_DATA_DIR": str(data_dir),
            "INHOUSE_MODELS_DIR": str(shared_models_dir()),
            "INHOUSE_BUILTIN_MODEL": "true" if builtin_model else "false",
            "INHOUSE_LOG_LEVEL": "warning",
            "INHOUSE_GATEWAY__REGISTRY_REFRESH_SECONDS": "0.5",
            "INHOUSE_GATEWAY__AUTH_CACHE_SECONDS": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"serve-{self.port}.log"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "inhouse", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"inhouse {' '.join(args)} failed: {result.stderr}")
        return result

    def start(
        self,
        timeout: float = 180.0,
        *command: str,
        require_ready: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> InhouseProcess:
        """Start ``inhouse serve`` (or the given command, e.g. ``node --model M``) and wait
        until /readyz answers 200 (or, without ``require_ready``, answers at all); ``tls``
        verifies (and authenticates) the probe of an HTTPS server."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inhouse",
                *(command or ("serve",)),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"inhouse serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                status = httpx.get(
                    f"{self.base_url}/readyz", timeout=2, verify=tls or True
                ).status_code
                if status == 200 or not require_ready:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(
            f"inhouse serve not ready in {timeout}s: {self.log_path.read_text()[-3000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def new_key(self, tenant: str, role: str = "developer") -> str:
        listed = self.cli("tenants", "list", "--json").stdout.splitlines()
        if tenant not in {json.loads(line)["name"] for line in listed}:
            self.cli("tenants", "create", tenant)
        return self.cli("keys", "create", "--tenant", tenant, "--role", role).stdout.strip()
