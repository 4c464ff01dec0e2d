"""The three things the gateway benchmark measures, each started on loopback.

- ``direct``: the fake upstream itself (the floor).
- ``inhouse``: ``python -m inhouse serve`` on a fresh data dir, with a tenant, a key and the
  fake upstream registered as model ``fake``; metering and authentication on (the defaults).
- ``litellm``: the LiteLLM proxy, installed once into ``bench/.venv-litellm``, one worker, no
  database, master key ``sk-bench-master``, every outbound fetch switched off.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _gateway.procs import LOOPBACK_NO_PROXY, Children, free_port, post_json, tail, wait_ready

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
# Pinned: a version whose ``[proxy]`` extra resolves from PyPI as-is (later ones need packages
# the index may lack); 1.82.7, 1.82.8 and 1.107.0 were compromised releases, never use those.
LITELLM_SPEC = "litellm[proxy]==1.106.12"
LITELLM_MASTER_KEY = "sk-bench-master"
# Keep LiteLLM offline and quiet: bundled cost map and other tables instead of fetching them,
# no telemetry, warning-level logs (which also turns uvicorn's access log off).
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "WARNING",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
    "DISABLE_SCHEMA_UPDATE": "true",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
READY_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 1200.0
KEY_RE = re.compile(r"ih_[A-Za-z0-9_-]+")


class TargetError(RuntimeError):
    """A target could not be set up; the benchmark skips it with this message."""


@dataclass
class Target:
    name: str
    base_url: str  # ends in /v1
    key: str
    model: str
    proc: subprocess.Popen[bytes] | None = None


def smoke_test(target: Target) -> None:
    """One real completion through ``target``; raises TargetError when it fails."""
    payload = {"model": target.model, "messages": [{"role": "user", "content": "hi"}]}
    err = post_json(target.base_url + "/chat/completions", payload, target.key)
    if err:
        raise TargetError(f"smoke request failed: {err}")


def direct(upstream_url: str) -> Target:
    return Target("direct", upstream_url, "sk-fake", "fake-model")


# --- inhouse ---------------------------------------------------------------------------------


def inhouse_python() -> str:
    """A Python that can import ``inhouse``: this one, else the project's ``.venv``."""
    if importlib.util.find_spec("inhouse") is not None:
        return sys.executable
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    if venv_python.exists():
        return str(venv_python)
    raise TargetError("the inhouse package is not importable and .venv is missing (make install)")


def inhouse_cli(python: str, args: list[str], env: dict[str, str], cwd: Path) -> str:
    cmd = [python, "-m", "inhouse", *args]
    try:
        done = subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise TargetError(f"`inhouse {' '.join(args)}` timed out") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip()[-800:]
        raise TargetError(f"`inhouse {' '.join(args)}` failed ({done.returncode}): {out}")
    return done.stdout


def inhouse_env(data_dir: Path) -> dict[str, str]:
    """The environment of an ``inhouse`` process of the benchmark on ``data_dir``."""
    return {
        **os.environ,
        **LOOPBACK_NO_PROXY,
        "INHOUSE_DATA_DIR": str(data_dir),
        "INHOUSE_BUILTIN_MODEL": "false",
        "INHOUSE_LOG_LEVEL": "warning",
    }


# Every limit on and far from reached: each request is estimated, reserved and settled.
BENCH_QUOTAS = [
    "--tokens-per-day", "1000000000000", "--tokens-per-month", "1000000000000",
    "--rpm", "1000000000", "--tpm", "1000000000000", "--concurrency", "100000",
]  # fmt: skip


def start_inhouse(
    upstream_url: str,
    workdir: Path,
    children: Children,
    *,
    name: str = "inhouse",
    quotas: bool = False,
    redis_url: str | None = None,
    settings: dict[str, str] | None = None,
    source: Path | None = None,
) -> Target:
    """``inhouse serve`` in front of the upstream; with ``quotas``, every limit is set for
    the bench tenant (counted in-process, or in Redis when ``redis_url`` is given);
    ``settings`` are extra ``INHOUSE_*`` variables; ``source``: run the ``inhouse``
    package of this ``src`` directory (another checkout) instead of the installed one."""
    python = inhouse_python()
    data_dir = workdir / f"{name}-data"
    data_dir.mkdir()
    env = inhouse_env(data_dir)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    if redis_url is not None:
        env["INHOUSE_REDIS_URL"] = redis_url
    env.update(settings or {})
    inhouse_cli(python, ["tenants", "create", "bench"], env, workdir)
    if quotas:
        inhouse_cli(python, ["quotas", "set", "bench", *BENCH_QUOTAS], env, workdir)
    keys = KEY_RE.findall(
        inhouse_cli(python, ["keys", "create", "--tenant", "bench"], env, workdir)
    )
    if not keys:
        raise TargetError("`inhouse keys create` printed no ih_... key")
    add = ["models", "add", "fake", "--url", upstream_url, "--upstream-model", "fake-model"]
    inhouse_cli(python, add, env, workdir)
    port = free_port()
    log = workdir / f"{name}.log"
    serve = [python, "-m", "inhouse", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = children.spawn(serve, env, workdir, log)
    base = f"http://127.0.0.1:{port}"
    err = wait_ready(base + "/readyz", proc, READY_TIMEOUT_S)
    if err:
        raise TargetError(f"inhouse serve: {err}\n{tail(log)}")
    return Target(name, base + "/v1", keys[-1], "fake", proc)


def checkout(ref: str, workdir: Path) -> Path:
    """The ``src`` directory of ``ref`` checked out (as a detached git worktree) in
    ``workdir``; ``remove_checkout`` takes it away again."""
    where = workdir / "baseline-checkout"
    cmd = ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(where), ref]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    if done.returncode != 0:
        raise TargetError(f"cannot check out {ref!r}: {done.stderr.strip()[-400:]}")
    return where / "src"


def remove_checkout(source: Path) -> None:
    cmd = ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(source.parent)]
    subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


# --- LiteLLM ---------------------------------------------------------------------------------


def _litellm_bin() -> Path:
    return LITELLM_VENV / "bin" / "litellm"


def ensure_litellm() -> Path:
    """Install ``LITELLM_SPEC`` into ``bench/.venv-litellm`` unless it is already there."""
    stamp = LITELLM_VENV / ".installed"
    if _litellm_bin().exists() and stamp.exists() and stamp.read_text().strip() == LITELLM_SPEC:
        return _litellm_bin()
    print(f"Installing {LITELLM_SPEC} into {LITELLM_VENV.relative_to(REPO_ROOT)} (first use) ...")
    py = LITELLM_VENV / "bin" / "python"
    steps = [
        [sys.executable, "-m", "venv", str(LITELLM_VENV)],
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", LITELLM_SPEC],
    ]
    if py.exists():
        steps = steps[1:]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"installing LiteLLM timed out: {' '.join(cmd)}") from exc
        if done.returncode != 0:
            errors = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
            why = "\n".join(errors[-3:]) or done.stderr.strip()[-800:]
            raise TargetError(f"installing LiteLLM failed: {why}")
    if not _litellm_bin().exists():
        raise TargetError("the LiteLLM install has no `litellm` command")
    stamp.write_text(LITELLM_SPEC + "\n")
    return _litellm_bin()


def litellm_config(upstream_url: str) -> dict[str, object]:
    return {
        "model_list": [
            {
                "model_name": "fake",
                "litellm_params": {
                    "model": "openai/fake-model",
                    "api_base": upstream_url,
                    "api_key": "sk-fake",
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"telemetry": False, "set_verbose": False},
    }


def start_litellm(upstream_url: str, workdir: Path, children: Children) -> Target:
    exe = ensure_litellm()
    cfg = workdir / "litellm.yaml"
    cfg.write_text(json.dumps(litellm_config(upstream_url), indent=2))  # JSON is valid YAML
    env = {**os.environ, **LOOPBACK_NO_PROXY, **LITELLM_ENV}
    for var in ("DATABASE_URL", "LITELLM_MASTER_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(var, None)  # no database, and only this config's settings
    port = free_port()
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", "1"]
    log = workdir / "litellm.log"
    proc = children.spawn(cmd, env, workdir, log)
    base = f"http://127.0.0.1:{port}"
    err = wait_ready(base + "/health/liveliness", proc, READY_TIMEOUT_S * 2)
    if err:
        raise TargetError(f"litellm proxy: {err}\n{tail(log)}")
    return Target("litellm", base + "/v1", LITELLM_MASTER_KEY, "fake", proc)
