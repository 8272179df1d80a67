"""Parse files in a worker process, so one pathological file cannot hang or exhaust the ingest.

Why a process: a malformed or hostile PDF (a 19 KB file of form XObjects nested 18 deep that each draw the
next one twice, a content stream that inflates to hundreds of MB, ...) can keep the PDF engine (PDFium, C++)
busy for minutes, grow to gigabytes, or crash it. A thread cannot be stopped, shares the heap and dies with
the process; a worker process can be killed at a deadline and gets
its own address-space limit. Measured here: one worker per batch (not per file) costs ~0.3 s to start
(overlapped with the embedder's load) and ~1 ms of messaging per small file, so the normal path stays
fast.

Protocol: the worker (``python -m ingest.sandbox``) reads one JSON request per line on stdin and
answers with JSON lines on stdout (``ready``, then per file ``info``, ``page``... and ``end`` or
``error``). Plain JSON, never pickle: nothing the worker sends can run code in the parent.

Bounds:
* time: the parent waits at most ``ingest.parse_timeout_s`` in total for one file's messages, then
  kills the worker (restarted for the next file) and reports the file;
* memory: the worker sets RLIMIT_AS to ``SLMRAG_PARSE_MEMORY_MB`` (default 2048 MB); a parse that needs
  more fails with MemoryError inside the worker and is reported;
* a worker that dies (segfault, OOM killer) is reported for that file and restarted.

``SLMRAG_PARSE_ISOLATION=0`` parses in-process instead (debugging; no bounds beyond the page deadline).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from app.errors import DocumentError
from ingest.loaders import DocumentInfo, Page, load

DEFAULT_MEMORY_MB = 2048
START_TIMEOUT_S = 120.0  # a cold Python start on a busy machine; not charged to any file
_TEXT_PART = 1 << 20  # long pages (a whole text file) travel in parts of this many characters


def memory_limit_mb() -> int:
    value = os.environ.get("SLMRAG_PARSE_MEMORY_MB")
    return max(64, int(value)) if value else DEFAULT_MEMORY_MB


def isolation_enabled() -> bool:
    return os.environ.get("SLMRAG_PARSE_ISOLATION", "1") != "0"


class _Timeout(Exception):
    pass


class _WorkerDied(Exception):
    pass


class ParseWorker:
    """A long-lived parser process; :meth:`load` has the same contract as :func:`ingest.loaders.load`."""

    def __init__(self, memory_mb: int | None = None):
        self.memory_mb = memory_mb or memory_limit_mb()
        self._proc: subprocess.Popen | None = None
        self._buf = bytearray()
        self._ready = False
        self._busy = False  # a file's messages may still be in flight
        self.unavailable = False  # True when no worker process can be started at all

    # ------------------------------------------------------------------ process management
    def start(self) -> "ParseWorker":
        """Start the worker without waiting for it (so it boots while the embedder loads)."""
        if self.unavailable:
            return self
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ)
            root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env["SLMRAG_PARSE_MEMORY_MB"] = str(self.memory_mb)
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "ingest.sandbox"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, env=env, cwd=root, close_fds=True,
                )
            except OSError:  # no usable interpreter path (some embedded hosts): parse in-process instead
                self._proc = None
                self.unavailable = True
                return self
            self._buf = bytearray()
            self._ready = False
            self._busy = False
        return self

    def _ensure_ready(self) -> None:
        self.start()
        if not self._ready:
            try:
                msg = self._read(START_TIMEOUT_S)
            except (_Timeout, _WorkerDied) as exc:
                self.close()
                raise DocumentError(f"the parser process did not start ({type(exc).__name__}); "
                                    "check that 'python -m ingest.sandbox' runs.") from exc
            if msg.get("t") != "ready":
                self.close()
                raise DocumentError(f"the parser process sent {msg.get('t')!r} instead of 'ready'.")
            self._ready = True

    def close(self) -> None:
        proc, self._proc = self._proc, None
        self._ready = self._busy = False
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a killed process always goes
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> "ParseWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ messages
    def _read(self, timeout: float) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        end = time.monotonic() + max(0.0, timeout)
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return json.loads(line)
            left = end - time.monotonic()
            if left <= 0:
                raise _Timeout()
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                raise _Timeout()
            data = os.read(fd, 1 << 20)
            if not data:
                raise _WorkerDied()
            self._buf += data

    def load(self, path: Path, *, max_pages: int = 5000, timeout_s: float = 300.0) -> tuple[DocumentInfo, Iterator[Page]]:
        if self._busy:  # the previous file's pages were not all read: its messages are still queued
            self.close()
        self.start()
        if self.unavailable:
            return load(path, max_pages=max_pages, timeout_s=timeout_s)
        self._ensure_ready()
        assert self._proc is not None and self._proc.stdin is not None
        path = Path(path).absolute()  # the worker runs in another folder
        request = json.dumps({"path": str(path), "max_pages": max_pages, "timeout_s": timeout_s}) + "\n"
        try:
            self._proc.stdin.write(request.encode("utf-8"))
            self._proc.stdin.flush()
        except OSError as exc:
            self.close()
            raise DocumentError(f"{path}: the parser process ended unexpectedly; try again.") from exc
        self._busy = True
        budget = [float(timeout_s)]  # seconds of waiting left for this file (shared with the page iterator)
        first = self._next(path, budget, timeout_s)
        if first["t"] != "info":
            raise DocumentError(f"{path}: unexpected message from the parser process ({first['t']}).")
        info = DocumentInfo(title=first["title"], kind=first["kind"], pages=first["pages"])
        return info, self._pages(path, budget, timeout_s)

    def _next(self, path: Path, budget: list[float], timeout_s: float) -> dict:
        """The next message for the current file; parse errors, timeouts and crashes become DocumentError."""
        t0 = time.monotonic()
        try:
            msg = self._read(budget[0])
        except _Timeout:
            self.close()  # the only way to stop a parse that is stuck inside PDFium
            raise DocumentError(
                f"{path}: parsing took longer than {timeout_s:g} s (ingest.parse_timeout_s) and was stopped; "
                "the file may be malformed - re-export it, or raise the limit.") from None
        except _WorkerDied:
            code = self._proc.wait() if self._proc is not None else None
            self.close()
            why = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            raise DocumentError(
                f"{path}: the parser process died while reading this file ({why}; probably out of memory, "
                f"over {self.memory_mb} MB - SLMRAG_PARSE_MEMORY_MB); the file may be malformed.") from None
        finally:
            budget[0] -= time.monotonic() - t0
        if msg["t"] == "error":
            self._busy = False
            if msg.get("fatal"):
                self.close()  # after a MemoryError the worker exits; start afresh for the next file
            raise DocumentError(msg["msg"])
        return msg

    def _pages(self, path: Path, budget: list[float], timeout_s: float) -> Iterator[Page]:
        try:
            parts: list[str] = []
            while True:
                msg = self._next(path, budget, timeout_s)
                if msg["t"] == "end":
                    self._busy = False
                    return
                parts.append(msg["text"])
                if not msg.get("more"):
                    yield Page(text="".join(parts), page=msg["page"])
                    parts = []
        finally:
            if self._busy:  # abandoned mid-file (the consumer failed): drop the worker and its backlog
                self.close()


def load_bounded(path: Path, *, max_pages: int = 5000, timeout_s: float = 300.0,
                 worker: ParseWorker | None = None) -> tuple[DocumentInfo, Iterator[Page]]:
    """:func:`ingest.loaders.load` in a worker process (a temporary one unless ``worker`` is given)."""
    if not isolation_enabled():
        return load(path, max_pages=max_pages, timeout_s=timeout_s)
    if worker is not None:
        return worker.load(path, max_pages=max_pages, timeout_s=timeout_s)
    own = ParseWorker()
    try:
        info, pages = own.load(path, max_pages=max_pages, timeout_s=timeout_s)
    except BaseException:
        own.close()
        raise

    def iterate() -> Iterator[Page]:
        try:
            yield from pages
        finally:
            own.close()

    return info, iterate()


# ================================================================================= worker side
def _worker_main() -> None:  # pragma: no cover - runs in the child process
    import logging
    import resource

    logging.disable(logging.WARNING)
    # Import (and so initialise) what a parse needs before the memory limit applies: imports are not the
    # file's fault.
    import pypdfium2  # noqa: F401

    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print() from a library must not corrupt the protocol stream
    parent = os.getppid()

    def watchdog() -> None:  # the parent was SIGKILLed: do not parse on for nobody
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    # Started before the limit: a thread's stack and malloc arena are reserved address space.
    threading.Thread(target=watchdog, daemon=True).start()
    limit_mb = memory_limit_mb()
    limit = limit_mb * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass

    def send(obj: dict) -> None:
        protocol.write(json.dumps(obj).encode("utf-8") + b"\n")
        protocol.flush()

    send({"t": "ready"})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        req = json.loads(line)
        path = Path(req["path"])
        pages = None
        out_of_memory = False
        try:
            info, pages = load(path, max_pages=int(req["max_pages"]), timeout_s=float(req["timeout_s"]))
            send({"t": "info", "title": info.title, "kind": info.kind, "pages": info.pages})
            for page in pages:
                text = page.text
                for i in range(0, max(len(text), 1), _TEXT_PART):
                    send({"t": "page", "page": page.page, "text": text[i : i + _TEXT_PART],
                          "more": i + _TEXT_PART < len(text)})
            send({"t": "end"})
        except DocumentError as exc:
            send({"t": "error", "msg": str(exc)})
        except MemoryError:
            out_of_memory = True  # answered below, once the parser's objects are released
        except RecursionError:
            send({"t": "error", "msg": f"{path}: the file's structure is nested too deeply to read; it may be malformed."})
        except BrokenPipeError:
            os._exit(0)
        except OSError as exc:
            send({"t": "error", "msg": f"{path}: cannot read the file ({exc.strerror or exc})."})
        except Exception as exc:  # a parser bug on one file: report it, keep serving
            send({"t": "error", "msg": f"{path}: could not be parsed ({type(exc).__name__}: {str(exc)[:200]})"})
        if out_of_memory:
            pages = None  # closes the page generator and frees the reader
            send({"t": "error", "fatal": True,
                  "msg": f"{path}: parsing needs more than {limit_mb} MB of memory (SLMRAG_PARSE_MEMORY_MB) "
                         "and was stopped; the file may be malformed or a decompression bomb."})
            os._exit(3)

if __name__ == "__main__":  # pragma: no cover
    _worker_main()
