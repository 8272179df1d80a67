"""The answer queue (app/queueing.py) and the ingest's pacing (app/pacing.py).

Unit tests drive the queue with plain threads and events (no model); the integration test puts the real
Assistant (packaged MiniLM + SmolLM2, a real index) behind a place held by the test, so that three asks
wait, are told their places as they change, and are answered in the order they came.
Every wait has a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from app.errors import SlmragError
from app.pacing import PacedProgress, ingest_in_background, lower_thread_priority
from app.queueing import AnswerQueue, QueueTimeout, ahead_message, resource_key

DEADLINE = 30.0


def wait_for(predicate, what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds, failing after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Asker(threading.Thread):
    """Waits for a place, records the positions it is told, holds the place until ``release`` is set."""

    def __init__(self, q: AnswerQueue, name: str, log: list, hold: bool = True, **admit_kwargs):
        super().__init__(name=name, daemon=True)
        self.q, self.log, self.admit_kwargs = q, log, admit_kwargs
        self.positions: list[int] = []
        self.waiting = threading.Event()
        self.inside = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        if not hold:
            self.release.set()

    def tell(self, ahead: int) -> None:
        self.positions.append(ahead)
        self.waiting.set()

    def run(self) -> None:
        try:
            with self.q.admit(self.tell, **self.admit_kwargs):
                self.log.append(self.name)
                self.inside.set()
                assert self.release.wait(DEADLINE)
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            self.error = exc
            self.waiting.set()


def queue_behind_a_holder(q: AnswerQueue, names: list[str], log: list, **kw) -> list[Asker]:
    """Start askers one after another, each only once the previous one is waiting (a known order)."""
    askers = []
    for name in names:
        a = Asker(q, name, log, **kw)
        a.start()
        assert a.waiting.wait(DEADLINE), f"{name} never waited"
        askers.append(a)
    return askers


def test_first_come_first_served_with_positions_as_they_change():
    q = AnswerQueue(1)
    log: list[str] = []
    with q.admit() as admission:  # the answer being written when the others arrive
        assert admission.ahead == 0 and q.running == 1
        b, c, d = queue_behind_a_holder(q, ["b", "c", "d"], log)
        assert q.waiting == 3 and log == []
    behind = [b, c, d]
    while behind:
        asker = behind.pop(0)
        assert asker.inside.wait(DEADLINE)
        assert q.running == 1  # capacity 1: the next one stays out while this one holds its place
        # A waiter reports the count it sees when it wakes; let each see this state before the next change.
        for n, later in enumerate(behind, 1):
            wait_for(lambda: later.positions[-1] == n, f"{later.name} to be told {n}")
        asker.release.set()
        asker.join(DEADLINE)
    assert log == ["b", "c", "d"]
    assert b.positions == [1, 0]
    assert c.positions == [2, 1, 0]
    assert d.positions == [3, 2, 1, 0]
    assert (q.running, q.waiting) == (0, 0)


def test_capacity_above_one_admits_that_many_and_queues_the_rest():
    q = AnswerQueue(2)
    log: list[str] = []
    first = Asker(q, "a", log)
    second = Asker(q, "b", log)
    for a in (first, second):
        a.start()
        assert a.inside.wait(DEADLINE)
    assert first.positions == [] and second.positions == []  # admitted at once: never told a place
    (third,) = queue_behind_a_holder(q, ["c"], log)
    assert third.positions == [2] and q.running == 2 and not third.inside.is_set()
    second.release.set()
    assert third.inside.wait(DEADLINE)
    assert third.positions == [2, 0] and q.running == 2
    for a in (first, second, third):
        a.release.set()
        a.join(DEADLINE)
    assert log == ["a", "b", "c"] and (q.running, q.waiting) == (0, 0)


def test_an_exception_inside_releases_the_place():
    q = AnswerQueue(1)
    with pytest.raises(RuntimeError, match="generation failed"), q.admit():
        raise RuntimeError("generation failed")
    assert (q.running, q.waiting) == (0, 0)
    with q.admit() as admission:  # the next request gets in at once
        assert admission.ahead == 0


class Gone(Exception):
    """What a UI raises from its callback when its browser session went away."""


def test_an_abandoned_wait_gives_up_its_place():
    q = AnswerQueue(1)
    log: list[str] = []
    leaving = threading.Event()

    def tell(ahead: int) -> None:
        if leaving.is_set():
            raise Gone()

    with q.admit():
        (b,) = queue_behind_a_holder(q, ["b"], log)
        quitter = Asker(q, "quitter", log, heartbeat_s=0.01)

        def told(ahead: int) -> None:
            quitter.waiting.set()
            tell(ahead)

        quitter.tell = told
        quitter.start()
        assert quitter.waiting.wait(DEADLINE)
        (d,) = queue_behind_a_holder(q, ["d"], log)
        assert d.positions == [3]
        leaving.set()  # the heartbeat calls the callback again, which raises: the place is given up
        quitter.join(DEADLINE)
        assert isinstance(quitter.error, Gone)
        wait_for(lambda: d.positions[-1] == 2, "d to move up when the quitter left")
        assert q.waiting == 2
    for asker in (b, d):
        assert asker.inside.wait(DEADLINE)
        asker.release.set()
        asker.join(DEADLINE)
    assert log == ["b", "d"] and (q.running, q.waiting) == (0, 0)


def test_raising_when_told_its_turn_releases_the_place():
    q = AnswerQueue(1)
    log: list[str] = []
    with q.admit():
        quitter = Asker(q, "quitter", log)

        def tell(ahead: int) -> None:
            quitter.waiting.set()
            if ahead == 0:
                raise Gone()

        quitter.tell = tell
        quitter.start()
        assert quitter.waiting.wait(DEADLINE)
        (c,) = queue_behind_a_holder(q, ["c"], log, hold=False)
    quitter.join(DEADLINE)
    c.join(DEADLINE)
    assert isinstance(quitter.error, Gone) and log == ["c"] and (q.running, q.waiting) == (0, 0)


def test_heartbeat_repeats_an_unchanged_position():
    q = AnswerQueue(1)
    calls = threading.Event()
    seen: list[int] = []

    def tell(ahead: int) -> None:
        seen.append(ahead)
        if len(seen) >= 3:
            calls.set()

    with q.admit():
        waiter = Asker(q, "w", [], hold=False, heartbeat_s=0.01)
        waiter.tell = tell
        waiter.start()
        assert calls.wait(DEADLINE)
        assert seen[:3] == [1, 1, 1]
    waiter.join(DEADLINE)
    assert seen[-1] == 0 and (q.running, q.waiting) == (0, 0)


def test_timeout_raises_a_readable_error_and_leaves_the_queue_clean():
    q = AnswerQueue(1)
    with q.admit():
        with pytest.raises(QueueTimeout, match="1 question still ahead after 0.05 s"):
            with q.admit(timeout_s=0.05):
                pytest.fail("admitted while the only place was taken")
        assert (q.running, q.waiting) == (1, 0)
    assert (q.running, q.waiting) == (0, 0)


def test_wait_idle():
    q = AnswerQueue(1)
    assert q.wait_idle(0.0)
    log: list[str] = []
    a = Asker(q, "a", log)
    a.start()
    assert a.inside.wait(DEADLINE)
    assert not q.wait_idle(0.02)
    done = threading.Event()
    threading.Thread(target=lambda: (q.wait_idle(DEADLINE), done.set()), daemon=True).start()
    assert not done.is_set()
    a.release.set()
    assert done.wait(DEADLINE)


def test_capacity_must_be_positive_and_messages():
    with pytest.raises(SlmragError, match="generator.concurrency"):
        AnswerQueue(0)
    assert ahead_message(1) == "Waiting for the model - 1 question ahead of you"
    assert ahead_message(2) == "Waiting for the model - 2 questions ahead of you"
    assert ahead_message(0).startswith("Your turn")


def test_resource_key_and_concurrency_setting():
    from app.settings import GeneratorSettings

    assert resource_key(GeneratorSettings()) == "local"
    server = GeneratorSettings(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", concurrency=4)
    assert resource_key(server) == "server:http://127.0.0.1:9/v1" and server.concurrency == 4
    with pytest.raises(Exception, match="concurrency"):
        GeneratorSettings(concurrency=0)


# ================================================================================ pacing
class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []
        self.threads: set[int] = set()

    def __getattr__(self, name):
        def record(*args):
            self.calls.append((name, *args))
            self.threads.add(threading.get_ident())
        return record


def test_paced_progress_waits_for_answers_between_batches():
    q = AnswerQueue(1)
    inner = Recorder()
    paced = PacedProgress(inner, q, pause_s=DEADLINE)
    resumed = threading.Event()
    with q.admit():  # an answer is being written
        worker = threading.Thread(target=lambda: (paced.chunks(64), resumed.set()), daemon=True)
        worker.start()
        wait_for(lambda: inner.calls == [("chunks", 64)], "the batch to be reported")
        assert not resumed.wait(0.05)  # holds the next batch back while the answer is written
    assert resumed.wait(DEADLINE)
    worker.join(DEADLINE)
    # Bounded: with answers that never stop, the ingest still moves on after pause_s.
    with q.admit():
        t = time.monotonic()
        PacedProgress(inner, q, pause_s=0.05).chunks(1)
        assert time.monotonic() - t < DEADLINE


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="needs POSIX priorities")
def test_ingest_in_background_lowers_its_thread_only_and_relays_progress():
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    sink = Recorder()

    def run(progress):
        progress.start(2)
        progress.chunks(3)
        progress.finish()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), threading.get_ident()

    nice, ident = ingest_in_background(run, sink, AnswerQueue(1), nice=min(19, here + 5))
    assert nice == min(19, here + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == here  # the caller is untouched
    assert sink.calls == [("start", 2), ("chunks", 3), ("finish",)]
    assert sink.threads == {threading.get_ident()} and ident != threading.get_ident()

    def failing(progress):
        raise SlmragError("bad file")

    with pytest.raises(SlmragError, match="bad file"):
        ingest_in_background(failing, sink, None, nice=0)
    assert lower_thread_priority(0) == 0


# ================================================================================ the real Assistant
@pytest.mark.slow
def test_concurrent_asks_wait_in_order_and_see_their_places(tmp_pack):
    from app.assistant import AskOptions, Assistant
    from app.store import IndexStore
    from ingest.starter import ensure_index

    pack = tmp_pack("medical")
    ensure_index(pack)
    assistant = Assistant(pack).load()
    questions = {"a": "What blood pressure defines stage 1 hypertension?",
                 "b": "What is the target INR range on warfarin?",
                 "c": "Which vasopressor is first choice in septic shock?"}
    order: list[str] = []
    places: dict[str, list[int]] = {n: [] for n in questions}
    waiting = {n: threading.Event() for n in questions}
    answers: dict[str, object] = {}
    errors: list[BaseException] = []

    def asker(name: str) -> None:
        def tell(ahead: int) -> None:
            if not places[name] or places[name][-1] != ahead:  # the heartbeat repeats; keep the changes
                places[name].append(ahead)
            if ahead == 0:
                order.append(name)
            waiting[name].set()

        try:
            stream = assistant.ask(questions[name], AskOptions(max_tokens=4, filter="none"), on_position=tell)
            parts = list(stream)
            answers[name] = stream.answer
            assert "".join(parts) == stream.answer.answer
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            waiting[name].set()

    threads = []
    with assistant.queue.admit():  # another session's answer is being written
        for name in questions:
            t = threading.Thread(target=asker, args=(name,), daemon=True)
            t.start()
            threads.append(t)
            assert waiting[name].wait(120), f"{name} did not queue"
        assert assistant.queue.waiting == 3 and not errors
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert order == ["a", "b", "c"]
    assert places == {"a": [1, 0], "b": [2, 1, 0], "c": [3, 2, 1, 0]}
    snapshot = IndexStore(pack.index_dir).snapshot()
    for name, ahead in zip("abc", (1, 2, 3)):
        ans = answers[name]
        assert ans.timings["queue_ahead"] == ahead and ans.timings["queue_s"] > 0
        assert ans.question == questions[name] and ans.index_generation == snapshot.generation
        assert {c["text"] for c in ans.citations} <= {p.text for p in ans.context}
    assert (assistant.queue.running, assistant.queue.waiting) == (0, 0)
    # A stream that is never consumed holds no place; one read to its answer has given its place back.
    unread = assistant.ask(questions["a"], AskOptions(max_tokens=4, filter="none"))
    assert (assistant.queue.running, assistant.queue.waiting) == (0, 0)
    first = next(iter(unread))
    assert first and (assistant.queue.running, assistant.queue.waiting) == (0, 0)


def test_the_answer_line_says_how_long_it_waited():
    from app.ui_support import format_timings

    line = format_timings({"retrieve_s": 0.02, "filter_s": 0.0, "first_token_s": 7.5, "total_s": 8.0,
                           "queue_s": 6.2, "queue_ahead": 2})
    assert line.startswith("waited 6.2 s for the model (2 questions ahead) · retrieve 20 ms")
    assert "waited" not in format_timings({"total_s": 2.0, "queue_s": 0.1, "queue_ahead": 1})
