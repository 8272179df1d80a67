"""One Assistant shared by several askers while an ingest lands (what the UI does with browser sessions).

Real models (MiniLM through ONNX, SmolLM2 through llama.cpp), a real index, real files. Each answer must
come from one index snapshot: every passage it shows exists, with the same text, in the snapshot of the
generation the answer reports.
"""

from __future__ import annotations

import threading

import pytest

from app.assistant import Assistant, AskOptions
from app.store import IndexStore
from ingest.ingestor import Ingestor
from ingest.starter import ensure_index

pytestmark = pytest.mark.slow

NEW_DOCS = {
    "zolmitrin_protocol.txt": "Zolmitrin protocol. The loading dose of zolmitrin is 40 mg on day one, then 20 mg daily.",
    "quarvex_guidance.txt": "Quarvex guidance. Quarvex must be stopped 72 hours before elective surgery.",
    "belsatra_note.txt": "Belsatra note. Belsatra is contraindicated in the third trimester of pregnancy.",
}
QUESTIONS = ["What blood pressure defines stage 1 hypertension?", "What is the target INR range on warfarin?",
             "Which vasopressor is first choice in septic shock?"]


@pytest.fixture
def shared(tmp_pack, monkeypatch):
    pack = tmp_pack("medical")
    ensure_index(pack)
    snapshots: dict[int, object] = {}
    original = IndexStore.snapshot

    def recording(self, *args, **kwargs):  # a spy: keeps every snapshot an Assistant reads, by generation
        snap = original(self, *args, **kwargs)
        snapshots.setdefault(snap.generation, snap)
        return snap

    monkeypatch.setattr(IndexStore, "snapshot", recording)
    return pack, Assistant(pack).load(), snapshots


def _consistent(answer, snapshots) -> None:
    snap = snapshots[answer.index_generation]
    for p in answer.passages:
        assert p.vid in snap.vid_to_pos, f"passage {p.vid} is not in generation {answer.index_generation}"
        assert snap.chunks[snap.vid_to_pos[p.vid]].text == p.text
    assert {c["text"] for c in answer.citations} <= {p.text for p in answer.context}


def test_concurrent_askers_while_an_ingest_lands(shared, tmp_path):
    pack, assistant, snapshots = shared
    start_gen = assistant.snapshot.generation
    docs = tmp_path / "new"
    docs.mkdir()
    answers, errors = [], []
    lock = threading.Lock()
    stop = threading.Event()
    seen_new = threading.Event()

    def asker(i: int) -> None:
        try:
            for n in range(60):  # bounded; normally ends when the ingest is done
                if stop.is_set():
                    return
                assistant.refresh()  # what every UI rerun does
                ans = assistant.ask(QUESTIONS[(i + n) % len(QUESTIONS)], AskOptions(max_tokens=4)).run()
                with lock:
                    answers.append(ans)
                if ans.index_generation > start_gen:
                    seen_new.set()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=asker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        ingestor = Ingestor(pack)
        for name, text in NEW_DOCS.items():  # one commit (one new generation) per document
            (docs / name).write_text(text, encoding="utf-8")
            summary = ingestor.ingest([docs / name])
            assert summary.ok and len(summary.added) == 1
        assert seen_new.wait(timeout=300), "no asker saw the new index generations"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)
    generations = {a.index_generation for a in answers}
    assert start_gen in generations and max(generations) > start_gen
    for ans in answers:
        _consistent(ans, snapshots)
    # After the last refresh, the new documents are searchable.
    assistant.refresh()
    top = assistant.retrieve("What is the loading dose of zolmitrin?", AskOptions(filter="none")).passages
    assert top and top[0].name == "zolmitrin_protocol.txt"


def test_an_ask_keeps_its_snapshot_when_the_index_changes_mid_answer(shared, tmp_path):
    pack, assistant, snapshots = shared
    before = assistant.snapshot.generation
    stream = assistant.ask(QUESTIONS[0], AskOptions(max_tokens=4))  # retrieval done, generation not yet
    (tmp_path / "late.txt").write_text(NEW_DOCS["quarvex_guidance.txt"], encoding="utf-8")
    assert len(Ingestor(pack).ingest([tmp_path / "late.txt"]).added) == 1
    assert assistant.refresh() and assistant.snapshot.generation > before
    answer = stream.run()
    assert answer.index_generation == before
    _consistent(answer, snapshots)
