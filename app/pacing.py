"""Keeping answers usable while documents are ingested: OS priority for the ingest, pauses between batches.

Seen before this module: one ``slmrag ask`` next to an ingest of a large folder took over 4 minutes on a
2-core machine, against ~4 s alone. llama.cpp's threads spin-wait for each other at every step of a
token; when the ingest's embedding threads hold the cores, every step waits for a descheduled thread.

The policy, in one place:

* An ingest runs at a lowered OS priority (``nice``; ``SLMRAG_INGEST_NICE``, default 10, 0 turns it off).
  The scheduler then gives the cores to an answer whenever one is being written and to the ingest the rest
  of the time, so an ingest alone still runs at full speed. ``slmrag ingest`` lowers its whole process
  (:func:`lower_process_priority`); the UI ingests an upload in a thread of its own at that priority
  (:func:`ingest_in_background`), because on Linux a priority belongs to a thread and is inherited by
  the threads and processes it starts (torch's workers, the parser process).
* In the UI's process the ingest also pauses between embedding batches while an answer is being written
  or waits in the :class:`~app.queueing.AnswerQueue` (at most ``SLMRAG_INGEST_PAUSE_S`` seconds per batch,
  default 30, so a busy UI still finishes the upload).

An unprivileged process can lower its priority but never raise it again, which is why the UI never lowers
its own session threads (Streamlit may reuse one for the session's next question).
"""

from __future__ import annotations

import os
import queue as queue_module
import threading
from collections.abc import Callable
from typing import TypeVar

from app.queueing import AnswerQueue

T = TypeVar("T")

DEFAULT_NICE = 10
DEFAULT_PAUSE_S = 30.0


def _env_number(name: str, default: float, cast: Callable = float):
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return cast(raw)
    except ValueError:
        from app.errors import ConfigError

        raise ConfigError(f"{name}={raw!r} is not a number; unset it or give a number.") from None


def ingest_nice() -> int:
    """The niceness an ingest runs at (``SLMRAG_INGEST_NICE``, 0-19; 0 leaves the priority alone)."""
    return max(0, min(19, _env_number("SLMRAG_INGEST_NICE", DEFAULT_NICE, int)))


def ingest_pause_s() -> float:
    """Most seconds an in-process ingest waits between batches for answers to finish (``SLMRAG_INGEST_PAUSE_S``)."""
    return max(0.0, _env_number("SLMRAG_INGEST_PAUSE_S", DEFAULT_PAUSE_S))


def _renice(tid: int, nice: int) -> None:
    # Only ever lower the priority (raise niceness): raising it back needs privileges we may lack.
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # a thread that ended meanwhile, or a platform that refuses: the ingest runs anyway
        pass


def lower_thread_priority(nice: int | None = None) -> int:
    """Lower the calling thread's priority (Linux: threads and processes it starts later inherit it).
    Returns the niceness asked for."""
    nice = ingest_nice() if nice is None else nice
    if nice > 0 and hasattr(os, "setpriority"):
        _renice(threading.get_native_id(), nice)
    return nice


def lower_process_priority(nice: int | None = None) -> int:
    """Lower the priority of every thread of this process, for a process that only ingests (``slmrag
    ingest``). Returns the niceness asked for."""
    nice = ingest_nice() if nice is None else nice
    if nice <= 0 or not hasattr(os, "setpriority"):
        return nice
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc (not Linux): setpriority on the process id covers the process there
        tids = [0]
    for tid in tids:
        _renice(tid, nice)
    return nice


class PacedProgress:
    """A progress sink (see ``ingest.ingestor.ProgressSink``) that also paces the ingest: after each
    embedding batch it reports, it waits (at most ``pause_s``) until no answer is being written or waits.

    Why the progress sink: the ingest reports every embedding batch to it, so pausing here needs no change
    to the ingest itself."""

    def __init__(self, inner, answers: AnswerQueue | None, pause_s: float | None = None):
        self.inner = inner
        self.answers = answers
        self.pause_s = ingest_pause_s() if pause_s is None else pause_s

    def start(self, total_files: int) -> None:
        self.inner.start(total_files)

    def file(self, name: str) -> None:
        self.inner.file(name)

    def chunks(self, n: int) -> None:
        self.inner.chunks(n)
        if self.answers is not None and self.pause_s > 0:
            self.answers.wait_idle(self.pause_s)

    def advance(self) -> None:
        self.inner.advance()

    def finish(self) -> None:
        self.inner.finish()


class _Relay:
    """Progress calls made in the ingest's thread, queued for the caller's thread to apply."""

    def __init__(self, events: queue_module.SimpleQueue):
        self.events = events

    def __getattr__(self, name: str):
        if name not in {"start", "file", "chunks", "advance", "finish"}:
            raise AttributeError(name)
        return lambda *args: self.events.put((name, args))


def ingest_in_background(run: Callable[[object], T], progress, answers: AnswerQueue | None,
                         nice: int | None = None) -> T:
    """Run an in-process ingest, ``run(progress_sink)``, so that answering stays usable meanwhile.

    The ingest runs in a new thread at lowered priority and pauses between batches while ``answers`` is
    busy (:class:`PacedProgress`). The calling thread waits, applying the ingest's progress calls to
    ``progress`` itself (Streamlit elements can be updated only from their session's thread), and gets
    the result or the ingest's exception. If the caller is interrupted (a browser session that went
    away), the ingest still finishes in its thread: an upload is either indexed or reported, never cut.
    """
    events: queue_module.SimpleQueue = queue_module.SimpleQueue()
    outcome: dict = {}

    def work() -> None:
        lower_thread_priority(nice)
        try:
            outcome["value"] = run(PacedProgress(_Relay(events), answers))
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            events.put(None)

    worker = threading.Thread(target=work, name="slmrag-ingest", daemon=False)
    worker.start()
    while True:
        event = events.get()
        if event is None:
            break
        name, args = event
        getattr(progress, name)(*args)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
