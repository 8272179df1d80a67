"""Admission to the generator: a first-come, first-served queue with a visible position.

Why: on an ordinary 2-core CPU one answer already uses both cores. Two answers generated at once each take
more than twice as long (llama.cpp's threads spin-wait for each other), and with eight browser sessions
asking together nobody would see an answer for a long time. So answers are admitted ``capacity`` at a
time (``generator.concurrency`` in pack.yaml: 1 for a model in this process, more for a server that
batches requests); the others wait in arrival order and are told, as it changes, how many questions are
ahead of them ("Waiting for the model - 2 questions ahead of you").

:meth:`AnswerQueue.admit` is a context manager: the place is released when the block ends, however it ends
(an exception, a browser session that went away, a stream nobody consumed), so a place never leaks.

The gate covers generation only. Retrieval and the relevance filter run before it, outside the queue:
they read an immutable index snapshot (safe to share), take tens of milliseconds, and a question whose
passages all fail the filter is answered with the abstention at once, without waiting for the model.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.errors import SlmragError

PositionCallback = Callable[[int], None]


class QueueTimeout(SlmragError):
    """A request waited longer than its deadline for the model."""


@dataclass
class Admission:
    """What one request's wait was: ``ahead`` questions in front of it when it arrived, ``waited_s`` seconds."""

    ahead: int = 0
    waited_s: float = 0.0


HEARTBEAT_S = 2.0  # how often a waiting request's callback is called even when its place has not moved


def ahead_message(ahead: int) -> str:
    """The line a waiting user reads."""
    if ahead <= 0:
        return "Your turn: the model is writing your answer"
    return f"Waiting for the model - {ahead} question{'s' if ahead != 1 else ''} ahead of you"


def resource_key(settings) -> str:
    """What a pack's answers compete for: the server at ``generator.base_url``, else this process's cores.
    Packs with the same key (and concurrency) share one queue in a process serving several packs."""
    return f"server:{settings.base_url}" if getattr(settings, "base_url", None) else "local"


class AnswerQueue:
    """At most ``capacity`` requests inside at once; the rest wait first come, first served.

    Thread-safe. A waiting request's position is ``ahead``: the requests being answered plus those
    waiting in front of it. ``on_position(ahead)`` runs in the waiting thread (so a UI can update its own
    page), outside the queue's lock (so it may be slow or raise: raising abandons the wait and frees
    the place).
    """

    def __init__(self, capacity: int = 1):
        if capacity < 1:
            raise SlmragError(f"A queue needs a capacity of at least 1, got {capacity}; set "
                              "generator.concurrency to 1 or more in pack.yaml.")
        self.capacity = capacity
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._running = 0
        self._version = 0  # bumped on every change, so a waiter never misses one while its callback runs

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _changed(self) -> None:
        self._version += 1
        self._cond.notify_all()

    @contextlib.contextmanager
    def admit(self, on_position: PositionCallback | None = None, *, heartbeat_s: float | None = None,
              timeout_s: float | None = None) -> Iterator[Admission]:
        """Wait for a place, hold it for the ``with`` block, release it on the way out.

        ``on_position(ahead)`` is called while waiting: first when the request has to wait, then each time
        the count changes, every ``heartbeat_s`` seconds if given, and with 0 when its turn comes (a caller
        whose user went away can raise from it, and the place goes to the next one). It is never called
        for a request admitted at once. ``timeout_s``: raise :class:`QueueTimeout` after waiting that long.
        """
        ticket = object()
        start = time.monotonic()
        deadline = None if timeout_s is None else start + timeout_s
        admission = Admission()
        admitted = False
        with self._cond:
            self._waiting.append(ticket)
            self._changed()
        try:
            told: int | None = None
            told_at = start
            first = True
            while True:
                with self._cond:
                    index = self._waiting.index(ticket)
                    if index == 0 and self._running < self.capacity:
                        self._waiting.popleft()
                        self._running += 1
                        admitted = True
                        self._changed()
                        break
                    ahead = self._running + index
                    seen = self._version
                if first:
                    admission.ahead, first = ahead, False
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise QueueTimeout(
                        f"The model is busy: {ahead} question{'s' if ahead != 1 else ''} still ahead after "
                        f"{timeout_s:g} s of waiting; try again in a moment.")
                if on_position is not None and (ahead != told or (heartbeat_s and now - told_at >= heartbeat_s)):
                    on_position(ahead)  # outside the lock; may raise, which abandons the place
                    told, told_at = ahead, time.monotonic()
                with self._cond:
                    if self._version == seen:  # nothing changed while the callback ran
                        limits = [t for t in (deadline, told_at + heartbeat_s if heartbeat_s else None) if t]
                        self._cond.wait(None if not limits else max(0.0, min(limits) - time.monotonic()))
            admission.waited_s = round(time.monotonic() - start, 4)
            if on_position is not None and told is not None:
                on_position(0)  # your turn (inside the place: raising here releases it)
            yield admission
        finally:
            with self._cond:
                if admitted:
                    self._running -= 1
                else:
                    self._waiting.remove(ticket)
                self._changed()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no request is inside or waiting, at most ``timeout_s`` seconds; True when idle.

        Background work (an ingest in the same process) calls this between its batches so it does not
        compete with an answer being written."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._running or self._waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
