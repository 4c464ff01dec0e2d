"""Start ``inhouse node`` (the local engine behind an OpenAI-compatible API) on loopback."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _engine.workload import MODEL
from _gateway.procs import LOOPBACK_NO_PROXY, Children, free_port, tail, wait_ready

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".cache" / "models"
READY_TIMEOUT_S = 180.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NodeError(RuntimeError):
    """The node could not be started; the message says why."""


@dataclass
class Node:
    """A running node: its process, base URL and bearer token."""

    proc: subprocess.Popen[Any]
    base_url: str
    token: str
    log: Path


def node_env(data_dir: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(LOOPBACK_NO_PROXY)
    env.update(
        INHOUSE_DATA_DIR=str(data_dir),
        INHOUSE_MODELS_DIR=str(MODELS_DIR),
        INHOUSE_NODE_TOKEN=token,
        INHOUSE_LOG_LEVEL="warning",
    )
    return env


def model_dir() -> Path:
    return MODELS_DIR / MODEL


def _inhouse(*args: str) -> list[str]:
    return [sys.executable, "-m", "inhouse", *args]


def node_missing(env: dict[str, str]) -> str | None:
    """Why ``inhouse node`` cannot be used (None when ``inhouse node --help`` works)."""
    try:
        done = subprocess.run(
            _inhouse("node", "--help"), env=env, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`inhouse node --help` failed: {exc}"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return "`inhouse node --help` failed: " + " ".join(s.strip(" │╭╮╰╯─") for s in last)
    return None


def ensure_model(env: dict[str, str]) -> None:
    """Convert the built-in model into the model store unless it is there already."""
    if (model_dir() / "config.json").is_file():
        return
    print(f"preparing the built-in model in {MODELS_DIR} ...", flush=True)
    done = subprocess.run(
        _inhouse("models", "prepare"), env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0 or not (model_dir() / "config.json").is_file():
        raise NodeError(f"`inhouse models prepare` failed:\n{(done.stderr or done.stdout)[-800:]}")


def start_node(children: Children, dtype: str, workdir: Path) -> Node:
    """Start a node serving the built-in model in ``dtype``; returns once ``/readyz`` is 200."""
    token = secrets.token_urlsafe(24)
    data_dir = workdir / f"node-{dtype}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = node_env(data_dir, token)
    ensure_model(env)
    port = free_port()
    cmd = _inhouse("node", "--model", MODEL, "--host", "127.0.0.1", "--port", str(port))
    log = workdir / f"node-{dtype}.log"
    proc = children.spawn([*cmd, "--dtype", dtype], env, REPO, log)
    base_url = f"http://127.0.0.1:{port}"
    why = wait_ready(f"{base_url}/readyz", proc, READY_TIMEOUT_S)
    if why is not None:
        children.stop(proc)
        raise NodeError(f"inhouse node ({dtype}) not ready: {why}\n{tail(log)}")
    return Node(proc, base_url, token, log)


def node_status(node: Node) -> dict[str, Any] | None:
    """``GET /v1/node/status`` (running, waiting, tokens_per_second, memory_rss_bytes, ...)."""
    req = urllib.request.Request(
        f"{node.base_url}/v1/node/status", headers={"Authorization": f"Bearer {node.token}"}
    )
    try:
        with _OPENER.open(req, timeout=5) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.HTTPError):
        return None
    return doc if isinstance(doc, dict) else None
