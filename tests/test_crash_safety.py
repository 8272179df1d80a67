"""The index survives crashes, concurrent writers and readers, and hostile files (issue 6, items 2-4).

* Crash safety: ``slmrag ingest`` (the real CLI, and a fast driver that runs the same Ingestor and store
  with a stand-in embedder, so more trials fit in CI) is SIGKILLed at random moments after it has
  committed at least once; after every kill the index must check clean, load, still hold everything
  committed before, and a new ingest must complete consistently. Commits are made frequent with
  ``SLMRAG_COMMIT_EVERY``.
* Concurrency: a second ingest waits for the first with a "waiting for ..." message, or with --no-wait
  fails clearly; a reader process taking snapshots while a writer commits always sees a consistent one.
* No code from data: pickles planted in an index folder (and in place of its FAISS file and its SQLite
  file) are never executed; loading them gives a clear error; no module under app/ or ingest/ imports a
  pickle-capable loader.
"""

from __future__ import annotations

import ast
import json
import os
import pickle  # only to *write* the hostile payloads this test plants
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.errors import IndexDamaged
from app.store import ChunkRow, DocumentRecord, IndexStore
from conftest import REPO

from test_reliability import make_pack, run_cli, slmrag_cmd

STUB_TRIALS = int(os.environ.get("SLMRAG_CRASH_TRIALS", "8"))
CLI_TRIALS = int(os.environ.get("SLMRAG_CRASH_CLI_TRIALS", "2"))

# A stand-in embedder: deterministic unit vectors from a hash; whitespace tokens.
HASH_EMBEDDER = textwrap.dedent('''
    import hashlib
    import numpy as np

    class HashEmbedder:
        def __init__(self, identity, dim):
            self.identity, self.dim = identity, dim
        def load(self):
            return self
        def count_tokens(self, text):
            return len(text.split())
        def encode(self, texts, progress=None):
            out = np.zeros((len(texts), self.dim), dtype="float32")
            for i, t in enumerate(texts):
                seed = int.from_bytes(hashlib.sha256(t.encode("utf-8", "replace")).digest()[:4], "big")
                v = np.random.default_rng(seed).standard_normal(self.dim).astype("float32")
                out[i] = v / np.linalg.norm(v)
            if progress:
                progress(len(texts))
            return out
''')

# The fast driver: the real Ingestor, store and parse sandbox; only the embedder is the stand-in.
DRIVER = HASH_EMBEDDER + textwrap.dedent('''
    import json, sys
    from app.packs import load_pack
    from ingest.ingestor import Ingestor

    pack_dir, index_dir, corpus = sys.argv[1:4]
    identity = sys.argv[4] if len(sys.argv) > 4 else "test:hash-16"
    dim = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    summary = Ingestor(load_pack(pack_dir, index_dir), embedder=HashEmbedder(identity, dim)).ingest([corpus])
    print(json.dumps(summary.to_json()))
''')


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("driver") / "ingest_driver.py"
    path.write_text(DRIVER)
    return path


def driver_cmd(driver: Path, pack: Path, index: Path, corpus: Path, *extra: str) -> list[str]:
    return [sys.executable, str(driver), str(pack), str(index), str(corpus), *extra]


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_corpus(folder: Path, n: int, revision: int = 0, rng: random.Random | None = None) -> None:
    """n small files; on a new revision about half of them change (so an ingest updates them)."""
    rng = rng or random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    topics = ["warfarin dosing and INR checks", "metformin and kidney function", "sepsis bundle timing",
              "blood pressure targets", "lease renewal notice", "quarterly revenue by segment"]
    for i in range(n):
        f = folder / f"doc_{i:03d}.txt"
        if f.exists() and rng.random() < 0.5:
            continue
        body = " ".join(f"Paragraph {p} of document {i} (revision {revision}) is about {topics[(i + p) % len(topics)]}."
                        for p in range(6))
        f.write_text(f"# Document {i}\n\n{body}\n")


def consistency(index: Path) -> list[str]:
    """Everything a reader relies on, beyond IndexStore.check(): the snapshot loads and agrees."""
    store = IndexStore(index)
    problems = list(store.check())
    try:
        snap = store.snapshot()
    except Exception as exc:  # noqa: BLE001 - any failure to load is the inconsistency we count
        return problems + [f"snapshot failed: {type(exc).__name__}: {exc}"]
    if snap.faiss_index is not None and snap.faiss_index.ntotal != len(snap.chunks):
        problems.append(f"ntotal {snap.faiss_index.ntotal} != {len(snap.chunks)} chunks")
    if snap.faiss_index is None and snap.chunks:
        problems.append("chunks without vectors")
    return problems


def _children(pid: int) -> list[int]:
    try:
        out = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(x) for x in fh.read().split()]
        return out
    except OSError:
        return []


def kill_after_commit(cmd: list[str], index: Path, env: dict, rng: random.Random, max_commits: int,
                      max_jitter: float, timeout: float = 600) -> dict:
    """Start an ingest, wait until it has committed 1..max_commits new generations (random), then
    SIGKILL it after a random jitter - landing anywhere in the parse/embed/write/commit cycle."""
    gen0 = IndexStore(index).generation() if IndexStore(index).exists() else 0
    target = gen0 + rng.randint(1, max_commits)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    gen = gen0
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        try:
            gen = IndexStore(index).generation()
        except IndexDamaged:
            pass
        if gen >= target:
            break
        time.sleep(0.01)
    committed = gen > gen0
    delay = rng.uniform(0, max_jitter)
    time.sleep(delay)
    workers = _children(proc.pid)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    # The parse worker notices its parent is gone (EOF on stdin, or its watchdog) and exits.
    deadline = time.monotonic() + 15
    while any(os.path.exists(f"/proc/{w}") and _state(w) != "Z" for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [w for w in workers if os.path.exists(f"/proc/{w}") and _state(w) != "Z"]
    return {"committed": committed, "killed": killed, "delay": round(delay, 3), "gen_before": gen0,
            "gen_after": IndexStore(index).generation(), "orphans": orphans, "stderr": err[-2000:]}


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _committed_paths(index: Path) -> set[str]:
    return {d.path for d in IndexStore(index).documents().values()}


# ------------------------------------------------------------------------------------- crash safety
def test_sigkill_during_ingest_never_breaks_the_index(tmp_path, driver):
    rng = random.Random(int(os.environ.get("SLMRAG_CRASH_SEED", "6")))
    pack = make_pack(tmp_path / "pack")
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    env = child_env(SLMRAG_COMMIT_EVERY=2)
    results, inconsistencies = [], 0
    for trial in range(STUB_TRIALS):
        write_corpus(corpus, 40, revision=trial + 1, rng=rng)
        before = _committed_paths(index) if IndexStore(index).exists() else set()
        r = kill_after_commit(driver_cmd(driver, pack, index, corpus), index, env, rng, max_commits=4, max_jitter=0.1)
        problems = consistency(index)
        lost = before - _committed_paths(index)  # an update replaces a document atomically
        if lost:
            problems.append(f"{len(lost)} previously committed documents lost")
        if r["orphans"]:
            problems.append(f"parse worker(s) {r['orphans']} outlived the killed ingest")
        inconsistencies += bool(problems)
        results.append({**r, "problems": problems})
        # A fresh ingest after the crash completes and leaves a consistent, complete index.
        done = subprocess.run(driver_cmd(driver, pack, index, corpus), env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["failed"] == [], summary["failed"]
        assert consistency(index) == []
        assert len(IndexStore(index).documents()) == 40
    killed = sum(r["killed"] and r["committed"] for r in results)
    print(f"\ncrash trials (driver): {len(results)}, killed after >=1 commit: {killed}, "
          f"inconsistencies: {inconsistencies}")
    for r in results:
        print(f"  gen {r['gen_before']}->{r['gen_after']} delay {r['delay']}s killed={r['killed']} problems={r['problems']}")
    assert inconsistencies == 0, results
    assert killed >= max(1, STUB_TRIALS - 2), results  # nearly every trial was a real mid-ingest kill


def test_sigkill_real_cli_ingest_then_status_check(tmp_path):
    rng = random.Random(61)
    pack = make_pack(tmp_path / "pack")
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    env = child_env(SLMRAG_COMMIT_EVERY=2)
    cmd = slmrag_cmd() + ["ingest", str(corpus), "--pack", str(pack), "--index-dir", str(index), "--json"]
    inconsistencies, killed = 0, 0
    for trial in range(CLI_TRIALS):
        write_corpus(corpus, 40, revision=trial + 1, rng=rng)
        before = _committed_paths(index) if IndexStore(index).exists() else set()
        r = kill_after_commit(cmd, index, env, rng, max_commits=3, max_jitter=0.3)
        killed += r["killed"] and r["committed"]
        problems = consistency(index) + (["lost documents"] if before - _committed_paths(index) else [])
        inconsistencies += bool(problems)
        assert not problems, (r, problems)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    status = run_cli(["status", "--check", "--json", "--pack", str(pack), "--index-dir", str(index)], timeout=300)
    assert status.returncode == 0, status.stderr[-2000:]
    info = json.loads(status.stdout)
    assert info["consistent"] is True and info["problems"] == [] and info["documents"] == 40
    print(f"\ncrash trials (slmrag CLI): {CLI_TRIALS}, killed after >=1 commit: {killed}, inconsistencies: {inconsistencies}")
    assert killed == CLI_TRIALS


def _index_rows(index: Path) -> tuple[dict[str, int], dict[int, np.ndarray]]:
    """{file name: chunks} and {chunk id: vector} of an index."""
    snap = IndexStore(index).snapshot()
    names = {d.doc_id: d.name for d in snap.documents.values()}
    per_doc: dict[str, int] = {}
    for c in snap.chunks:
        per_doc[names[c.doc_id]] = per_doc.get(names[c.doc_id], 0) + 1
    return per_doc, {c.vid: snap.vector(c.vid) for c in snap.chunks}


def test_killed_ingest_resumes_where_it_stopped(tmp_path):
    """kill -9 after the first files are committed, then the same command again: it skips exactly the
    committed files, ingests the rest, and the index is the one a single uninterrupted run builds - the
    same documents, chunk ids and (to bf16 rounding) vectors, nothing lost or duplicated."""
    from conftest import write_pdf

    pack = make_pack(tmp_path / "pack")
    corpus = tmp_path / "filings"
    corpus.mkdir()
    topics = ["revenue by segment", "operating lease liabilities", "goodwill impairment", "share repurchases",
              "deferred tax assets", "inventory write-downs", "pension obligations", "credit facility covenants"]
    for i in range(16):
        write_pdf(corpus / f"filing_{i:02d}.pdf", [
            f"Filing {i}, page {p + 1}. " + " ".join(f"Note {p + 1}.{k}: {topics[(i + p + k) % len(topics)]} changed by "
                                                       f"{(i * 7 + p * 3 + k) % 40 + 1} percent in fiscal {2015 + i}." for k in range(6))
            for p in range(5)])
    cmd = slmrag_cmd() + ["ingest", str(corpus), "--pack", str(pack), "--json"]
    env = child_env(SLMRAG_COMMIT_EVERY=1)

    reference = tmp_path / "reference"
    done = subprocess.run(cmd + ["--index-dir", str(reference)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ref_chunks, ref_vectors = _index_rows(reference)
    assert len(ref_chunks) == 16

    # Kill once the first documents are committed (polled in SQLite, with a deadline; no fixed sleep).
    index = tmp_path / "index"
    proc = subprocess.Popen(cmd + ["--index-dir", str(index)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    committed: set[str] = set()
    while time.monotonic() < deadline and proc.poll() is None and not committed:
        try:
            committed = _committed_paths(index) if IndexStore(index).exists() else set()
        except IndexDamaged:
            pass
        time.sleep(0.005)
    assert proc.poll() is None, "the ingest finished before it could be killed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    committed = _committed_paths(index)
    assert 1 <= len(committed) < 16, committed
    assert consistency(index) == []

    again = subprocess.run(cmd + ["--index-dir", str(index)], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert set(summary["skipped"]) == committed  # what was committed is not parsed or embedded again
    assert set(summary["added"]) == {str(p) for p in corpus.glob("*.pdf")} - committed
    assert summary["failed"] == [] and summary["updated"] == []
    status = run_cli(["status", "--check", "--json", "--pack", str(pack), "--index-dir", str(index)], env=env, timeout=300)
    assert status.returncode == 0, status.stderr[-2000:]
    info = json.loads(status.stdout)
    assert info["consistent"] is True and info["documents"] == 16

    chunks, vectors = _index_rows(index)
    assert chunks == ref_chunks
    assert vectors.keys() == ref_vectors.keys()
    cos = min(float(vectors[v] @ ref_vectors[v]) for v in vectors)
    assert cos > 0.999, cos  # the same chunks, embedded in other batches (bf16 rounding differs)


# -------------------------------------------------------------------------------------- concurrency
class BlockingProgress:
    """Progress sink that parks the ingest (holding the index lock) until released."""

    def __init__(self):
        self.holding = threading.Event()
        self.release = threading.Event()

    def start(self, total_files): ...
    def chunks(self, n): ...
    def advance(self): ...
    def finish(self): ...

    def file(self, name):
        self.holding.set()
        assert self.release.wait(600)


def test_second_ingest_waits_or_fails_clearly(tmp_path, driver):
    from app.packs import load_pack
    from ingest.ingestor import Ingestor

    pack_dir = make_pack(tmp_path / "pack")
    index = tmp_path / "index"
    first, second = tmp_path / "first", tmp_path / "second"
    write_corpus(first, 4)
    second.mkdir()
    (second / "later.txt").write_text("A later document about anticoagulant reversal with vitamin K.\n")

    # Ingest A (in this process, same embedder identity as the CLI's) parks while holding the lock.
    ns: dict = {}
    exec(compile(HASH_EMBEDDER, "hash_embedder", "exec"), ns)
    embedder = ns["HashEmbedder"]("packaged:minilm", 384)
    progress = BlockingProgress()
    ingestor = Ingestor(load_pack(pack_dir, index), embedder=embedder)
    box: dict = {}
    holder = threading.Thread(target=lambda: box.setdefault("summary", ingestor.ingest([first], progress=progress)))
    holder.start()
    try:
        assert progress.holding.wait(120)
        cli = slmrag_cmd()
        args = ["ingest", str(second), "--pack", str(pack_dir), "--index-dir", str(index), "--json"]
        waiting = subprocess.Popen(cli + args, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        refused = subprocess.run(cli + args + ["--no-wait"], env=child_env(), capture_output=True, text=True, timeout=600)
        assert refused.returncode == 1, refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr
        assert "being written by another slmrag process" in refused.stderr and f"pid {os.getpid()}" in refused.stderr
        # The waiting one says so on stderr and blocks.
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(waiting.stderr))
        reader.start()
        deadline = time.monotonic() + 300
        while not any("waiting for" in line for line in err_lines) and time.monotonic() < deadline:
            assert waiting.poll() is None, "".join(err_lines)
            time.sleep(0.1)
        assert any("waiting for" in line for line in err_lines), "".join(err_lines)
        time.sleep(1.0)
        assert waiting.poll() is None  # still blocked while A holds the lock
    finally:
        progress.release.set()
        holder.join(120)
    out = waiting.stdout.read()
    assert waiting.wait(600) == 0, "".join(err_lines)[-2000:]
    reader.join(10)
    assert "Traceback" not in "".join(err_lines)
    assert box["summary"].failed == [] and len(box["summary"].added) == 4
    assert json.loads(out)["added"] == [str(second / "later.txt")]
    assert consistency(index) == []
    assert len(IndexStore(index).documents()) == 5


READER = textwrap.dedent('''
    import json, sys, time
    from app.store import IndexStore
    store = IndexStore(sys.argv[1]); until = time.monotonic() + float(sys.argv[2])
    stats = {"snapshots": 0, "generations": [], "inconsistent": [], "errors": []}
    while time.monotonic() < until:
        try:
            snap = store.snapshot()
        except Exception as exc:
            stats["errors"].append(f"{type(exc).__name__}: {exc}"[:300]); continue
        stats["snapshots"] += 1
        if snap.generation not in stats["generations"]:
            stats["generations"].append(snap.generation)
        vids = {c.vid for c in snap.chunks}
        n = snap.faiss_index.ntotal if snap.faiss_index is not None else 0
        import faiss
        ids = set(faiss.vector_to_array(snap.faiss_index.id_map).tolist()) if snap.faiss_index is not None else set()
        per_doc = {}
        for c in snap.chunks:
            per_doc[c.doc_id] = per_doc.get(c.doc_id, 0) + 1
        bad = n != len(vids) or ids != vids or any(per_doc.get(d, 0) != r.n_chunks for d, r in snap.documents.items())
        if bad:
            stats["inconsistent"].append(snap.generation)
    print(json.dumps(stats))
''')


def _doc(i: int, n_chunks: int, dim: int, rng: np.random.Generator):
    doc_id = f"d{i:05d}"
    rows = [ChunkRow(i * 1000 + j + 1, f"c{i}-{j}", doc_id, j, None, 0, 1, "", f"text {i} {j}") for j in range(n_chunks)]
    vecs = rng.standard_normal((n_chunks, dim)).astype("float32")
    rec = DocumentRecord(doc_id, f"/docs/{doc_id}.txt", f"{doc_id}.txt", "sha", 1, "text", doc_id, None, n_chunks, {}, 0.0)
    return rec, rows, vecs


def test_reader_always_sees_a_consistent_snapshot_while_a_writer_commits(tmp_path):
    index = tmp_path / "index"
    store = IndexStore(index)
    rng = np.random.default_rng(3)
    with store.writer("test:rand-8", 8) as w:
        rec, rows, vecs = _doc(0, 3, 8, rng)
        w.add_document(rec, rows, vecs)
        w.commit()
    script = tmp_path / "reader.py"
    script.write_text(READER)
    reader = subprocess.Popen([sys.executable, str(script), str(index), "12"], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    commits = 0
    t_end = time.monotonic() + 11
    i = 1
    with store.writer("test:rand-8", 8) as w:
        while time.monotonic() < t_end:
            rec, rows, vecs = _doc(i, 1 + i % 5, 8, rng)
            w.add_document(rec, rows, vecs)
            if i > 3 and i % 3 == 0:
                w.remove_document(f"d{i - 3:05d}")
            w.commit()
            commits += 1
            i += 1
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err[-3000:]
    stats = json.loads(out.strip().splitlines()[-1])
    print(f"\nwriter commits: {commits}; reader snapshots: {stats['snapshots']}, generations seen: "
          f"{len(stats['generations'])}, inconsistent: {len(stats['inconsistent'])}, errors: {len(stats['errors'])}")
    assert stats["inconsistent"] == [] and stats["errors"] == [], stats
    assert stats["snapshots"] >= 5 and len(stats["generations"]) >= 3
    assert store.check() == []


def test_snapshot_retries_when_its_generation_was_swept(tmp_path, monkeypatch):
    """The race the reader test hunts for, made deterministic: the generation read from SQLite is swept
    before its FAISS file is opened (faiss reports that as RuntimeError, not FileNotFoundError)."""
    import faiss

    index = tmp_path / "index"
    store = IndexStore(index)
    rng = np.random.default_rng(4)
    with store.writer("test:rand-8", 8) as w:
        for i in range(3):
            w.add_document(*_doc(i, 2, 8, rng))
            w.commit()
    real = faiss.read_index
    state = {"armed": True, "calls": 0}

    def racing_read_index(path, *a):
        state["calls"] += 1
        if state["armed"]:
            state["armed"] = False
            # Between our reading "generation 3" and opening its file, a writer commits twice: the
            # sweep that keeps the last two generations deletes vectors.3.faiss.
            with IndexStore(index).writer("test:rand-8", 8) as w:
                for i in (10, 11):
                    w.add_document(*_doc(i, 2, 8, rng))
                    w.commit()
            assert not os.path.exists(path)
        return real(path, *a)

    monkeypatch.setattr(faiss, "read_index", racing_read_index)
    snap = IndexStore(index).snapshot()
    assert snap.generation == 5 and snap.n_chunks == 10 and not state["armed"]


def test_a_document_that_fails_half_way_leaves_nothing_behind(tmp_path):
    """A statement failing inside add_document (here a lone surrogate SQLite cannot encode, after the
    document row went in) must not leave a document without its chunks to be committed later."""
    store = IndexStore(tmp_path / "index")
    rng = np.random.default_rng(8)
    with store.writer("test:rand-8", 8) as w:
        w.add_document(*_doc(1, 2, 8, rng))
        rec, rows, vecs = _doc(2, 3, 8, rng)
        rows[2].text = "broken \udc80 text"
        with pytest.raises(UnicodeEncodeError):
            w.add_document(rec, rows, vecs)
        w.add_document(*_doc(3, 1, 8, rng))
        w.commit()
    assert store.check() == []
    assert sorted(d.doc_id for d in store.documents().values()) == ["d00001", "d00003"]
    assert store.snapshot().faiss_index.ntotal == 3


# ------------------------------------------------------------------------------- no code from data
class _Payload:
    """Unpickling this creates the marker file - the proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(index: Path, marker: Path) -> None:
    payload = pickle.dumps(_Payload(marker))
    for name in ("index.pkl", "docstore.pkl", "index.faiss", "vectors.pkl", "embeddings.npy", "bm25.pkl",
                 "model.pt", "cross_encoder.bin"):
        (index / name).write_bytes(payload)
    code = f"open({str(marker)!r}, 'w').write('imported')\n"
    for name in ("faiss.py", "sqlite3.py", "numpy.py", "sitecustomize.py", "__init__.py"):
        (index / name).write_text(code)


def _small_index(index: Path) -> IndexStore:
    store = IndexStore(index)
    rng = np.random.default_rng(5)
    with store.writer("test:rand-8", 8) as w:
        for i in range(3):
            w.add_document(*_doc(i, 2, 8, rng))
        w.commit()
    return store


def test_planted_pickles_and_modules_in_the_index_folder_are_never_loaded(tmp_path):
    index = tmp_path / "idx"
    marker = tmp_path / "PWNED_MARKER"
    store = _small_index(index)
    _plant(index, marker)
    assert store.check() == []
    snap = store.snapshot()
    assert snap.n_chunks == 6 and len(store.documents()) == 3
    with store.writer("test:rand-8", 8) as w:  # opening for writing reads the folder too
        w.add_document(*_doc(7, 2, 8, np.random.default_rng(1)))
        w.commit()
    proc = run_cli(["status", "--check", "--json", "--pack", "medical", "--index-dir", str(index)], cwd=index, timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout)["consistent"] is True, proc.stderr[-2000:]
    assert not marker.exists(), "a planted payload was executed"


@pytest.mark.parametrize("victim", ["faiss", "sqlite"])
def test_pickle_in_place_of_an_index_file_is_a_clear_error_not_code(tmp_path, victim):
    index = tmp_path / "idx"
    marker = tmp_path / "PWNED_MARKER"
    store = _small_index(index)
    target = store.faiss_file(store.generation()) if victim == "faiss" else store.db_path
    for extra in index.glob("meta.sqlite-*"):
        extra.unlink()  # WAL side files belong to the SQLite file being replaced
    target.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(IndexDamaged, match="FAISS vector file|metadata store") as info:
        store.snapshot()
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value).strip()
    with pytest.raises(IndexDamaged):
        with store.writer("test:rand-8", 8):
            pass
    problems = store.check()
    assert problems and "cannot load index" in problems[0]
    proc = run_cli(["status", "--check", "--json", "--pack", "medical", "--index-dir", str(index)], timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if victim == "faiss":  # the metadata still reads: a report saying the index is not consistent
        assert proc.returncode == 1 and json.loads(proc.stdout)["consistent"] is False
    else:  # nothing can be listed: one clear error, no report
        assert proc.returncode == 1 and not proc.stdout.strip() and "error:" in proc.stderr
    assert not marker.exists(), "the planted pickle was executed"


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


def _risky_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: imports {n}")
        if isinstance(node, ast.Call):
            f = node.func
            dotted = ""
            if isinstance(f, ast.Attribute):
                base = f.value.id if isinstance(f.value, ast.Name) else getattr(f.value, "attr", "")
                dotted = f"{base}.{f.attr}"
            kw = {k.arg: k.value for k in node.keywords}
            if dotted == "torch.load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append(f"line {node.lineno}: torch.load without weights_only=True")
            if dotted in ("np.load", "numpy.load"):
                ap = kw.get("allow_pickle")
                if isinstance(ap, ast.Constant) and ap.value is True:
                    found.append(f"line {node.lineno}: numpy.load(allow_pickle=True)")
            if dotted.endswith(".read_pickle") or dotted.endswith("pickle.load") or dotted.endswith("pickle.loads"):
                found.append(f"line {node.lineno}: {dotted}")
            if isinstance(f, ast.Name) and f.id in ("__import__",):
                found.append(f"line {node.lineno}: __import__")
    return found


def test_no_module_under_app_or_ingest_can_unpickle():
    offenders = {}
    for folder in ("app", "ingest"):
        for py in sorted((REPO / folder).rglob("*.py")):
            found = _risky_calls(ast.parse(py.read_text(encoding="utf-8"), str(py)))
            if found:
                offenders[str(py.relative_to(REPO))] = found
    assert offenders == {}, offenders
    # The checker itself catches what it should.
    assert _risky_calls(ast.parse("import pickle\nimport torch\ntorch.load('x')\nimport numpy as np\nnp.load('a', allow_pickle=True)"))
    assert not _risky_calls(ast.parse("import torch\ntorch.load('x', weights_only=True)\n# import pickle"))
