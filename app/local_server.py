"""A GGUF model served by llama-cpp-python's OpenAI-compatible server on a loopback port.

Why this module: the tests of the 'openai' backend, the benches that compare serving with the embedded
model, and users of the ``serve`` extra who want a local engine all need the same steps - pick a free
port, start ``python -m llama_cpp.server``, wait until it answers, keep its output, stop it. They live
here once, so a fix (a deadline, the AMX workaround, the log tail in an error) reaches every caller.

    with LocalModelServer(model, alias="smollm2", threads=2, n_ctx=2048, log=Path("server.log")) as server:
        ...  # a pack with generator: {backend: openai, model: smollm2, base_url: server.base_url}
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.errors import MissingDependency, SlmragError

# llama_cpp.server and what its `server` extra installs: without them the subprocess would die at import.
_SERVER_MODULES = ("llama_cpp.server", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                   "pydantic_settings")

# Runs llama_cpp.server's main with the embedded backend's AMX workaround (see
# app.generators._without_extra_buffer_types): the server loads the model inside main(), while the
# default model params are patched. The folder holding the `app` package goes first on sys.path so that a
# checkout that is not installed works too.
_AMX_LAUNCH = """
import sys
sys.path.insert(0, {root!r})
from app.generators import _without_extra_buffer_types
sys.argv = ["llama_cpp.server"] + sys.argv[1:]
from llama_cpp.server.__main__ import main
with _without_extra_buffer_types():
    main()
"""

_LOG_TAIL = 3000


class LocalServerError(SlmragError):
    """The local model server did not start (it exited, or did not answer in time); shows its log tail."""


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; another process could take it before the server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_server_modules() -> list[str]:
    missing = []
    for name in _SERVER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # the parent package (llama_cpp) itself is missing
            found = False
        if not found:
            missing.append(name)
    return missing


class LocalModelServer:
    """``python -m llama_cpp.server`` serving ``model_path`` as ``alias`` on 127.0.0.1.

    ``start()`` returns once GET /v1/models answers (polled until ``deadline_s``) and raises
    :class:`LocalServerError` with the log tail if the server exits or does not answer in time. The
    server's output goes to ``log``: llama.cpp prints the whole model header, and a pipe nobody reads
    would fill and block the server.

    ``amx_workaround=True`` loads the model without llama.cpp's extra buffer types, as the embedded
    backend does; needed on CPUs that report AMX inside VMs that do not grant AMX tile state, where the
    first batched decode of a quantized model crashes (``SLMRAG_LLAMA_EXTRA_BUFTS=1`` still turns it off).
    ``None`` (the default): on where the CPU reports AMX, else llama_cpp.server as it ships.
    ``interrupt_requests=False`` keeps concurrent streaming answers going (by default the server cuts a
    streaming answer short when another request arrives).
    """

    def __init__(self, model_path: str | Path, *, alias: str, threads: int, n_ctx: int, log: Path,
                 deadline_s: float = 120.0, lora_path: str | Path | None = None, amx_workaround: bool | None = None,
                 interrupt_requests: bool = True):
        self.model_path, self.alias, self.threads, self.n_ctx = Path(model_path), alias, threads, n_ctx
        self.log, self.deadline_s, self.lora_path = Path(log), deadline_s, lora_path
        if amx_workaround is None:
            from app.embedder import native_bf16  # the one reading of /proc/cpuinfo's AMX flag

            # A served model crashed here on its first batched decode on an AMX machine (tests/test_serving.py).
            amx_workaround = native_bf16()
        self.amx_workaround, self.interrupt_requests = amx_workaround, interrupt_requests
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, what a pack's ``generator.base_url`` takes."""
        if self.port is None:
            raise LocalServerError("The local model server is not started: call start() first.")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The command line ``start()`` runs (complete once a port is chosen)."""
        launcher = ["-c", _AMX_LAUNCH.format(root=str(Path(__file__).resolve().parents[1]))] \
            if self.amx_workaround else ["-m", "llama_cpp.server"]
        cmd = [sys.executable, *launcher, "--model", str(self.model_path), "--model_alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
               "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]
        if self.lora_path is not None:
            cmd += ["--lora_path", str(self.lora_path)]
        if not self.interrupt_requests:
            cmd += ["--interrupt_requests", "False"]
        return cmd

    def start(self) -> LocalModelServer:
        if self._proc is not None:
            return self
        missing = _missing_server_modules()
        if missing:
            raise MissingDependency(
                f"Serving a model locally needs llama-cpp-python's server, which is not installed (missing: "
                f"{', '.join(missing)}). Install it with: pip install 'slmrag[serve]'")
        self.port = free_port()
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:  # also Ctrl-C while waiting: never leave a server behind
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        url = f"{self.base_url}/models"
        end = time.monotonic() + self.deadline_s
        while (left := end - time.monotonic()) > 0:
            if self._proc.poll() is not None:
                raise LocalServerError(f"llama_cpp.server for {self.model_path.name} exited with "
                                       f"{self._proc.returncode} before it answered.{self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=min(1.0, left)):
                    return  # urlopen raises on anything but 2xx
            except OSError:
                time.sleep(0.1)  # polling interval, not a wait for a fixed time: the deadline bounds the loop
        raise LocalServerError(f"llama_cpp.server for {self.model_path.name} did not answer on port {self.port} "
                               f"within {self.deadline_s:g} s.{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            tail = self.log.read_text(errors="replace")[-_LOG_TAIL:]
        except OSError as exc:
            return f" Its log {self.log} could not be read: {exc}"
        return f" The end of its log ({self.log}):\n{tail}"

    def stop(self) -> None:
        """Terminate the server (kill it if it has not exited after 10 s); a no-op when it is not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
