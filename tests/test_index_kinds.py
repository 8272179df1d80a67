"""Dense index kinds (flat, hnsw, ivfpq) through the real store: the switch at the threshold is recorded
and survives reopening, per-document add and remove, agreement with flat, memory-mapped reads,
document-first search, retraining, pack export/install, the CLI flag, and clear errors for a damaged or
unknown kind.

Vectors are synthetic (clustered, like chunk embeddings) where the embedder is irrelevant; the CLI test
ingests real files with the packaged MiniLM."""

from __future__ import annotations

import json
import pickle
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from app.errors import IndexDamaged
from app.settings import IndexSettings
from app.store import ChunkRow, DocumentRecord, IndexStore, chunk_hash, doc_id_for
from app.vector_index import Float16Rows

REPO = Path(__file__).resolve().parent.parent
D = 32
EMB = "test:clustered-32"
SETTINGS = IndexSettings(auto_threshold=2000, ivf_nprobe=16, rerank=50)
_CENTRES = np.random.default_rng(42).standard_normal((40, D)).astype("float32")


def _doc(i: int, n: int = 100, seed: int | None = None) -> tuple[DocumentRecord, list[ChunkRow], np.ndarray]:
    """Document i: n chunks whose vectors sit around a few of 40 shared centres (unit length)."""
    rng = np.random.default_rng(i if seed is None else seed)
    key = f"/docs/doc{i}.txt"
    doc_id = doc_id_for(key)
    rows = []
    for j in range(n):
        cid, vid = chunk_hash(key, None, j, f"doc {i} chunk {j}")
        rows.append(ChunkRow(vid, cid, doc_id, j, None, j, j + 1, "", f"doc {i} chunk {j}"))
    centres = _CENTRES[rng.integers(0, len(_CENTRES), size=n)]
    vecs = centres + 0.35 * rng.standard_normal((n, D)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return DocumentRecord(doc_id, key, f"doc{i}.txt", f"sha{i}", 1, "txt", f"Doc {i}", None, n, {}, time.time()), rows, vecs


def _build(path: Path, docs: range, kind: str | None = None, settings: IndexSettings = SETTINGS,
           embedder: str = EMB) -> IndexStore:
    store = IndexStore(path)
    with store.writer(embedder, D, settings=settings, kind=kind) as w:
        for i in docs:
            w.add_document(*_doc(i))
        w.commit()
    return store


def _queries(n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(7)
    q = _CENTRES[rng.integers(0, len(_CENTRES), size=n)] + 0.35 * rng.standard_normal((n, D)).astype("float32")
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _recall(a: IndexStore, b: IndexStore, k: int = 10, vids=None) -> float:
    sa, sb = a.snapshot(settings=SETTINGS), b.snapshot(settings=SETTINGS)
    hits = 0
    for q in _queries():
        truth = {v for v, _ in sa.search(q, k, vids)}
        hits += len(truth & {v for v, _ in sb.search(q, k, vids)}) / len(truth)
    return hits / len(_queries())


def test_auto_switches_to_ivfpq_at_the_threshold_and_the_choice_survives_reopening(tmp_path):
    store = _build(tmp_path / "idx", range(15))  # 1500 vectors: under the threshold of 2000
    assert store.index_info()["kind"] == "flat"
    with store.writer(EMB, D, settings=SETTINGS) as w:
        for i in range(15, 25):
            w.add_document(*_doc(i))
        w.commit()
    info = IndexStore(tmp_path / "idx").index_info()  # a fresh handle reads it from the meta
    assert info["kind"] == "ivfpq" and info["params"]["trained_on"] == 2500
    assert info["params"]["nlist"] >= 16 and info["params"]["m"] == D // 8
    g = store.generation()
    assert info["files"] == [f"vectors.{g}.faiss", f"vectors.{g}.f16.npy", f"vectors.{g}.ids.npy"]
    snap = IndexStore(tmp_path / "idx").snapshot()
    assert snap.kind == "ivfpq" and snap.dense.ntotal == 2500 and store.check() == []
    # A smaller write under 'auto' keeps ivfpq (auto never goes back by itself).
    with store.writer(EMB, D, settings=SETTINGS) as w:
        w.remove_document(_doc(0)[0].doc_id)
        w.commit()
    assert store.index_info()["kind"] == "ivfpq" and store.check() == []


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_kinds_match_flat_and_document_first_search_stays_in_the_document(tmp_path, kind):
    flat = _build(tmp_path / "flat", range(25), "flat")
    other = _build(tmp_path / kind, range(25), kind)
    assert other.index_info()["kind"] == kind and flat.index_info()["kind"] == "flat"
    assert _recall(flat, other) >= 0.9
    # Document-first: restricted to one document's chunks (IDSelectorBatch through the kind's parameters).
    doc_id = _doc(3)[0].doc_id
    snap = other.snapshot(settings=SETTINGS)
    vids = np.asarray([c.vid for c in snap.chunks if c.doc_id == doc_id], dtype="int64")
    found = snap.search(_queries()[0], 10, vids)
    assert len(found) == 10 and {v for v, _ in found} <= set(vids.tolist())
    assert _recall(flat, other, vids=vids) >= 0.9
    # The stored vector comes back exactly (ivfpq: from the float16 file, not the PQ codes).
    one = snap.chunks[17]
    expect = _doc(int(snap.documents[one.doc_id].name[3:-4]))[2][one.ord]
    assert np.allclose(snap.vector(one.vid), expect, atol=2e-3)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_add_and_remove_documents_for_every_kind(tmp_path, kind):
    store = _build(tmp_path / "idx", range(12), kind)
    assert store.index_info()["kind"] == kind
    gone, kept = _doc(2), _doc(5)
    with store.writer(EMB, settings=SETTINGS) as w:  # remove needs no dim, as today
        w.remove_document(gone[0].doc_id)
        w.commit()
    snap = store.snapshot(settings=SETTINGS)
    assert store.check() == [] and snap.dense.ntotal == 1100
    assert all(c.doc_id != gone[0].doc_id for c in snap.chunks)
    q = gone[2][0]
    assert gone[1][0].vid not in {v for v, _ in snap.search(q, 20)}
    # The same document again with new vectors (same text, so the same ids), next to a replaced one.
    with store.writer(EMB, D, settings=SETTINGS) as w:
        w.add_document(*_doc(2, seed=99))
        w.remove_document(kept[0].doc_id)
        w.add_document(*_doc(5))
        w.commit()
    snap = store.snapshot(settings=SETTINGS)
    assert store.check() == [] and snap.dense.ntotal == 1200 and store.index_info()["kind"] == kind
    fresh = _doc(2, seed=99)[2][0]
    top = snap.search(fresh, 1)
    assert top[0][0] == gone[1][0].vid and top[0][1] == pytest.approx(1.0, abs=2e-3)
    # Only the current and the previous generation's files stay.
    g = store.generation()
    names = {p.name for p in (tmp_path / "idx").glob("vectors.*")}
    assert {n.split(".")[1] for n in names} <= {str(g), str(g - 1)}


def test_snapshots_are_memory_mapped(tmp_path):
    ivf = _build(tmp_path / "ivf", range(12), "ivfpq").snapshot()
    assert isinstance(faiss.downcast_InvertedLists(ivf.dense.index.invlists), faiss.OnDiskInvertedLists)
    # The float16 vectors are read row by row from the file (see Float16Rows), not loaded.
    assert isinstance(ivf.dense.exact, Float16Rows) and ivf.dense.exact.shape == (1200, D)
    assert np.array_equal(ivf.dense.exact[[5, 3, 4, 900]], np.load(ivf.dense.exact.file)[[5, 3, 4, 900]])
    flat = _build(tmp_path / "flat", range(3), "flat").snapshot()
    assert not faiss.downcast_index(flat.faiss_index.index).codes.is_owned  # a view of the mapped file
    hnsw = _build(tmp_path / "hnsw", range(3), "hnsw").snapshot()
    assert not faiss.downcast_index(faiss.downcast_index(hnsw.faiss_index.index).storage).codes.is_owned


def test_ivfpq_retrains_when_the_corpus_doubles(tmp_path):
    store = _build(tmp_path / "idx", range(12), "ivfpq")
    assert store.index_info()["params"]["trained_on"] == 1200
    with store.writer(EMB, D, settings=SETTINGS) as w:  # 1800 < 2 x 1200: codes added, no retraining
        for i in range(12, 18):
            w.add_document(*_doc(i))
        w.commit()
    assert store.index_info()["params"]["trained_on"] == 1200
    with store.writer(EMB, D, settings=SETTINGS) as w:  # 2400: retrained on everything
        for i in range(18, 24):
            w.add_document(*_doc(i))
        w.commit()
    assert store.index_info()["params"]["trained_on"] == 2400 and store.check() == []


def test_explicit_kind_is_remembered_and_auto_forgets_it(tmp_path):
    store = _build(tmp_path / "idx", range(3), "hnsw")  # 300 vectors: hnsw works at any size
    assert store.index_info()["kind"] == "hnsw" and store.index_info()["requested"] == "hnsw"
    with store.writer(EMB, D, settings=SETTINGS) as w:  # no flag: the remembered choice holds
        w.add_document(*_doc(3))
        w.commit()
    assert store.index_info()["kind"] == "hnsw"
    with store.writer(EMB, D, settings=SETTINGS, kind="flat") as w:  # a kind change alone is written
        w.commit()
    assert store.index_info()["kind"] == "flat" and store.check() == []
    # ivfpq asked for too few vectors to train on: stays flat, and says what was asked.
    with store.writer(EMB, D, settings=SETTINGS, kind="ivfpq") as w:
        w.commit()
    info = store.index_info()
    assert info["kind"] == "flat" and info["requested"] == "ivfpq"


def _set_meta(store: IndexStore, key: str, value: str) -> None:
    conn = sqlite3.connect(store.db_path)
    conn.execute("UPDATE meta SET value=? WHERE key=?", (value, key))
    conn.commit()
    conn.close()


def test_unknown_or_mismatched_kind_is_a_clear_error(tmp_path):
    store = _build(tmp_path / "idx", range(12), "ivfpq")
    _set_meta(store, "index_kind", "annoy")
    with pytest.raises(IndexDamaged, match="kind 'annoy'.*known: flat, hnsw, ivfpq"):
        store.snapshot()
    with pytest.raises(IndexDamaged, match="kind 'annoy'"):
        with store.writer(EMB, D):
            pass
    assert "kind 'annoy'" in store.check()[0]
    _set_meta(store, "index_kind", "hnsw")  # the file holds an IVF-PQ index
    with pytest.raises(IndexDamaged, match="records kind 'hnsw' but this file holds a IndexIVFPQ"):
        store.snapshot()


def test_a_pickle_in_place_of_the_exact_vectors_is_refused_not_loaded(tmp_path):
    store = _build(tmp_path / "idx", range(12), "ivfpq")
    f16 = tmp_path / "idx" / f"vectors.{store.generation()}.f16.npy"
    np.save(f16, np.array([{"x": 1}], dtype=object), allow_pickle=True)  # an object array is a pickle
    with pytest.raises(IndexDamaged, match="f16.npy: not a valid vector file"):
        store.snapshot()
    np.save(f16, np.zeros((3, D), dtype="float32"))
    with pytest.raises(IndexDamaged, match="f16.npy: not a valid vector file.*float16"):
        store.snapshot()
    np.save(f16, np.zeros((3, D), dtype="float16"))
    with pytest.raises(IndexDamaged, match="expected 1200 float16 vectors"):
        store.snapshot()


def test_pack_export_and_install_carry_an_ivfpq_index(tmp_path, monkeypatch):
    from app.pack_archive import export_pack, install_pack, new_pack
    from app.packs import load_pack

    packs, indexes = tmp_path / "packs", tmp_path / "indexes"
    packs.mkdir()
    monkeypatch.setenv("SLMRAG_PACKS_DIR", str(packs))
    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(indexes))
    new_pack("bigidx", "medical")
    store = _build(indexes / "bigidx", range(12), "ivfpq", embedder="packaged:minilm")  # the pack's embedder
    before = store.snapshot()
    archive = export_pack("bigidx", tmp_path / "bigidx.tgz", with_index=True, with_corpus=False).path
    import shutil

    shutil.rmtree(packs / "bigidx")
    shutil.rmtree(indexes / "bigidx")
    install_pack(archive)
    after = IndexStore(load_pack("bigidx").index_dir)
    assert after.check() == [] and after.index_info()["kind"] == "ivfpq"
    snap = after.snapshot()
    q = _queries()[0]
    assert snap.search(q, 10) == before.search(q, 10)


def test_cli_index_kind_flag_and_status_with_real_embeddings(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    topics = ["warfarin dosing and INR targets", "heart failure beta blockers", "asthma inhaler technique",
              "diabetes metformin kidney function", "sepsis fluids and antibiotics"]
    for i, topic in enumerate(topics):
        (corpus / f"note{i}.txt").write_text("\n\n".join(f"{topic}: paragraph {j} about {topic} in adults."
                                                         for j in range(4)))
    index = tmp_path / "index"
    env_cmd = [sys.executable, "-m", "app"]

    def cli(*args):
        return subprocess.run([*env_cmd, *args, "--pack", "medical", "--index-dir", str(index)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    bad = cli("ingest", str(corpus), "--index-kind", "annoy")
    assert bad.returncode == 2 and "--index-kind 'annoy' is not a kind" in bad.stderr
    done = cli("ingest", str(corpus), "--index-kind", "hnsw", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    status = cli("status", "--check", "--json")
    info = json.loads(status.stdout)
    assert status.returncode == 0 and info["consistent"] is True
    assert info["index"]["kind"] == "hnsw" and info["index"]["params"]["M"] == 32
    text = cli("status")
    assert "dense index: hnsw (M 32, ef_construction 80)" in text.stdout
    # The real question embedding finds the right note through the hnsw index, restricted or not.
    from app.packs import load_pack
    from app.retrieval import Retriever
    from app.embedder import Embedder

    pack = load_pack("medical", index)
    snap = IndexStore(index).snapshot(settings=pack.config.index)
    retriever = Retriever(snap, Embedder(pack.config.embedder, pack.path), pack.config.retrieval)
    top = retriever.search("What INR target applies on warfarin?", 3, mode="dense")
    assert top[0].name == "note0.txt"
    top = retriever.search("What INR target applies on warfarin?", 3, mode="dense", doc="note3.txt")
    assert top and all(p.name == "note3.txt" for p in top)
