"""Ingest on real parts: PDFium, the packaged MiniLM, FAISS and SQLite in a temporary index."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from app.store import IndexStore
from ingest.ingestor import Ingestor

GUIDE = textwrap.dedent("""\
    # Dosing guide
    Amoxicillin for adults with community acquired pneumonia is dosed at 1 g three times daily for five days.

    ## Renal impairment
    When creatinine clearance is below 30 mL/min, the interval is extended to every twelve hours.
    """)


def corpus(tmp_path: Path, pdf_factory) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "guide.md").write_text(GUIDE)
    (d / "notes.txt").write_text("The clinic closes at 6 pm on Fridays. Parking is free for patients.\n")
    (d / "page.html").write_text("<html><head><title>Triage</title><script>var x=1;</script></head>"
                                 "<body><h1>Triage levels</h1><p>Level 1 patients are seen immediately.</p></body></html>")
    pdf_factory(d / "report.pdf", [
        "Annual infection report. Page one covers staffing and hand hygiene audits.",
        "Page two: the surgical site infection rate fell to 1.8 percent in the second half of the year.",
        "Page three: recommendations for the coming year include chlorhexidine bathing.",
    ])
    return d


def test_ingest_all_formats_keeps_pdf_pages(tmp_path, pdf_factory, tmp_pack):
    pack = tmp_pack("medical")
    docs = corpus(tmp_path, pdf_factory)
    summary = Ingestor(pack).ingest([docs])
    assert summary.failed == []
    assert len(summary.added) == 4
    snap = IndexStore(pack.index_dir).snapshot()
    assert snap.faiss_index.ntotal == snap.n_chunks == summary.chunks
    by_name = {d.name: d for d in snap.documents.values()}
    assert by_name["report.pdf"].pages == 3
    pdf_chunks = [c for c in snap.chunks if c.doc_id == by_name["report.pdf"].doc_id]
    assert {c.page for c in pdf_chunks} == {1, 2, 3}
    rate = next(c for c in pdf_chunks if "1.8 percent" in c.text)
    assert rate.page == 2
    html = next(c for c in snap.chunks if c.doc_id == by_name["page.html"].doc_id)
    assert "Level 1 patients" in html.text and "var x" not in html.text
    # character spans point at the chunk in the document text
    md = next(c for c in snap.chunks if c.doc_id == by_name["guide.md"].doc_id)
    assert GUIDE[md.start:md.end] == md.text
    assert IndexStore(pack.index_dir).check() == []


def test_pdfium_text_is_plain_text():
    """PDFium ends lines with CRLF and marks a hyphen that breaks a word at a line end as U+0002."""
    from ingest.loaders import pdfium_text

    assert pdfium_text("cloud\x02based tools\r\nnext line\rlast") == "cloud-based tools\nnext line\nlast"


def test_pdf_title_comes_from_its_metadata_else_the_file_name(tmp_path, pdf_factory):
    from fpdf import FPDF

    from ingest.loaders import load

    pdf = FPDF()
    pdf.set_title("Annual infection report 2023")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.cell(0, 6, "Surgical site infections fell.")
    pdf.output(str(tmp_path / "titled.pdf"))
    info, pages = load(tmp_path / "titled.pdf")
    assert (info.title, info.kind, info.pages) == ("Annual infection report 2023", "pdf", 1)
    assert [(p.page, p.text) for p in pages] == [(1, "Surgical site infections fell.")]
    info, _ = load(pdf_factory(tmp_path / "ward_notes_2024.pdf", ["Page one."]))
    assert info.title == "ward notes 2024"


def test_reingest_is_noop_and_change_replaces(tmp_path, pdf_factory, tmp_pack):
    pack = tmp_pack("medical")
    docs = corpus(tmp_path, pdf_factory)
    ing = Ingestor(pack)
    first = ing.ingest([docs])
    store = IndexStore(pack.index_dir)
    gen = store.generation()
    again = ing.ingest([docs])
    assert again.added == [] and again.updated == [] and len(again.skipped) == 4
    assert store.generation() == gen  # nothing rewritten
    (docs / "notes.txt").write_text("The clinic now closes at 8 pm on Fridays.\n")
    changed = ing.ingest([docs])
    assert [Path(p).name for p in changed.updated] == ["notes.txt"]
    snap = store.snapshot()
    texts = [c.text for c in snap.chunks]
    assert any("8 pm" in t for t in texts) and not any("6 pm" in t for t in texts)
    assert snap.n_chunks == first.chunks - 1 + changed.chunks
    assert len({c.vid for c in snap.chunks}) == snap.n_chunks  # no duplicates
    assert store.check() == []


def test_unchanged_files_are_chunked_again_when_the_chunking_changed(tmp_path, pdf_factory, tmp_pack):
    import dataclasses
    import json
    import sqlite3

    from ingest.chunking import chunking_identity

    pack = tmp_pack("medical")
    docs = corpus(tmp_path, pdf_factory)
    Ingestor(pack).ingest([docs])
    store = IndexStore(pack.index_dir)
    stored = {d.name: d.info["chunking"] for d in store.documents().values()}
    assert set(stored.values()) == {chunking_identity(pack.config.chunking)} and len(stored) == 4
    # Other chunk sizes in the pack: every file is chunked again though none changed, and says so.
    smaller = dataclasses.replace(pack, config=pack.config.model_copy(update={
        "chunking": pack.config.chunking.model_copy(update={"chunk_tokens": 64})}))
    again = Ingestor(smaller).ingest([docs])
    assert len(again.rechunked) == 4 and sorted(again.updated) == sorted(again.rechunked) and again.skipped == []
    assert {d.info["chunking"] for d in store.documents().values()} == {chunking_identity(smaller.config.chunking)}
    assert Ingestor(smaller).ingest([docs]).skipped != []  # ... once
    # A document stored before identities were recorded counts as chunked by version 1 of the rules: skipped
    # under a strategy still at version 1, chunked again under one whose rules changed since.
    with sqlite3.connect(store.db_path) as db:
        for doc_id, info in db.execute("SELECT doc_id, info_json FROM documents").fetchall():
            legacy = {k: v for k, v in json.loads(info).items() if k != "chunking"}
            db.execute("UPDATE documents SET info_json = ? WHERE doc_id = ?", (json.dumps(legacy), doc_id))
    assert len(Ingestor(smaller).ingest([docs]).skipped) == 4  # sections v1 = what they were chunked with
    finance_rules = dataclasses.replace(smaller, config=smaller.config.model_copy(update={
        "chunking": smaller.config.chunking.model_copy(update={"strategy": "finance"})}))
    assert len(Ingestor(finance_rules).ingest([docs]).rechunked) == 4  # finance is at v2


def test_remove_document(tmp_path, pdf_factory, tmp_pack):
    pack = tmp_pack("medical")
    docs = corpus(tmp_path, pdf_factory)
    ing = Ingestor(pack)
    ing.ingest([docs])
    removed = ing.remove([docs / "report.pdf"])
    assert [Path(p).name for p in removed] == ["report.pdf"]
    snap = IndexStore(pack.index_dir).snapshot()
    assert "report.pdf" not in {d.name for d in snap.documents.values()}
    assert not any("surgical site" in c.text for c in snap.chunks)
    assert IndexStore(pack.index_dir).check() == []


def test_remove_in_a_fresh_process_never_imports_torch(tmp_path, pdf_factory, tmp_pack):
    """Removing needs only the size of the stored vectors, which the index knows: a UI process that
    answers through ONNX deletes a document without importing torch to load the embedder."""
    from app.embedder import Embedder

    pack = tmp_pack("medical")
    docs = corpus(tmp_path, pdf_factory)
    Ingestor(pack).ingest([docs])
    Embedder(pack.config.embedder, pack.path).load_query()  # the one-time ONNX export (that needs torch)
    code = textwrap.dedent(f"""
        import sys
        from app.assistant import Assistant
        from app.packs import load_pack
        from ingest.ingestor import Ingestor
        pack = load_pack("medical", {str(pack.index_dir)!r})
        a = Assistant(pack).load(generator=False)
        removed = Ingestor(pack, embedder=a.embedder).remove([{str(docs / "report.pdf")!r}])
        print(len(removed), a.embedder.query_runtime, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "onnx", "False"]
    snap = IndexStore(pack.index_dir).snapshot()
    assert "report.pdf" not in {d.name for d in snap.documents.values()}
    assert snap.faiss_index.d == Embedder(pack.config.embedder, pack.path).dim
    assert IndexStore(pack.index_dir).check() == []


def test_corrupt_pdf_reported_rest_ingested(tmp_path, pdf_factory, tmp_pack):
    pack = tmp_pack("medical")
    docs = corpus(tmp_path, pdf_factory)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage without xref")
    (docs / "empty.txt").write_bytes(b"")
    summary = Ingestor(pack).ingest([docs, tmp_path / "missing.pdf"])
    failed = {Path(f["path"]).name: f["error"] for f in summary.failed}
    assert set(failed) == {"broken.pdf", "empty.txt", "missing.pdf"}
    assert "PDF" in failed["broken.pdf"] and "empty" in failed["empty.txt"] and "no such file" in failed["missing.pdf"]
    assert len(summary.added) == 4


def test_index_loads_in_fresh_process_without_pickle(tmp_path, pdf_factory, tmp_pack):
    pack = tmp_pack("medical")
    Ingestor(pack).ingest([corpus(tmp_path, pdf_factory)])
    files = sorted(p.name for p in pack.index_dir.iterdir() if p.is_file())
    assert all(f.endswith((".sqlite", ".faiss")) or f.startswith(("meta.sqlite-", ".lock")) for f in files), files
    code = textwrap.dedent(f"""
        import pickle, sys
        def refuse(*a, **k):
            raise SystemExit("pickle was used")
        pickle.load = pickle.loads = pickle.Unpickler = refuse
        from app.store import IndexStore
        snap = IndexStore({str(pack.index_dir)!r}).snapshot()
        import json
        print(json.dumps({{"chunks": snap.n_chunks, "vectors": snap.faiss_index.ntotal}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["chunks"] == data["vectors"] > 0


def test_small_files_embedded_together_keep_their_own_vectors(tmp_path, tmp_pack):
    """Files are embedded in shared batches (ingest.ingestor flush); every stored vector must still be
    the one of its own chunk, in its own document."""
    from app.embedder import Embedder

    pack = tmp_pack("medical")
    docs = tmp_path / "many"
    docs.mkdir()
    topics = ["aspirin and gastric bleeding", "insulin pump settings", "measles vaccination schedule",
              "knee replacement rehabilitation", "migraine triggers and diaries", "asthma inhaler technique",
              "kidney stones and hydration", "sleep apnoea and CPAP masks", "hand hygiene audits in wards",
              "iron deficiency in pregnancy", "sunscreen and melanoma risk", "tetanus boosters after injury"]
    for i, topic in enumerate(topics):
        (docs / f"note{i:02d}.txt").write_text(f"Patient leaflet {i}: everything about {topic}.\n")
    summary = Ingestor(pack).ingest([docs, docs / "note03.txt"])  # one file named twice
    assert summary.failed == []
    assert sorted(summary.added) == sorted(set(summary.added)) and len(summary.added) == len(topics)
    snap = IndexStore(pack.index_dir).snapshot()
    assert snap.n_chunks == len(topics)
    embedder = Embedder(pack.config.embedder, pack.path)
    vids = [c.vid for c in snap.chunks]
    stored = np.stack([snap.vector(v) for v in vids])
    for c in snap.chunks:
        q = embedder.encode_query(c.text)
        assert vids[int(np.argmax(stored @ q))] == c.vid, c.text


def test_bf16_embeddings_match_fp32():
    from app.embedder import Embedder, native_bf16
    from app.settings import EmbedderSettings

    texts = ["Amoxicillin 1 g three times daily for five days.", "The lease ends on 31 March 2027.",
             "Net income rose 12% to $4.1 billion in fiscal 2023."]
    fp32 = Embedder(EmbedderSettings(precision="fp32")).load()
    bf16 = Embedder(EmbedderSettings(precision="bf16")).load()
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert Embedder(EmbedderSettings(precision="auto")).load().precision == ("bf16" if native_bf16() else "fp32")
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-3)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.999, cos
    assert not np.array_equal(a, b)  # the bf16 path really ran (bit-identical would mean it did not)


def test_onnx_query_encoder_matches_torch_and_answers_without_torch(tmp_path, tmp_pack, monkeypatch):
    """Questions are embedded with ONNX Runtime (exported once from the same weights): the vector is
    the torch one, and a fresh process answering from an index never imports torch."""
    from app.embedder import Embedder
    from app.settings import EmbedderSettings

    questions = ["What is the incubation period of COVID-19?",
                 "In the Remarketing Agreement between MetLife, Inc. and Deutsche Bank, which law governs? " * 30]
    onnx = Embedder(EmbedderSettings(query_runtime="onnx")).load_query()
    torch_fp32 = Embedder(EmbedderSettings(query_runtime="torch", precision="fp32")).load_query()
    assert (onnx.query_runtime, torch_fp32.query_runtime) == ("onnx", "torch")
    for q in questions:  # the second is far over the 256-token window: both truncate the same way
        a, b = onnx.encode_query(q), torch_fp32.encode_query(q)
        assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-4
        assert float(a @ b) > 0.9999
        assert onnx.count_tokens(q) == torch_fp32.count_tokens(q)

    pack = tmp_pack("medical")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pertussis.txt").write_text("Pertussis causes paroxysmal cough, inspiratory whoop and vomiting.\n")
    Ingestor(pack).ingest([docs])
    code = textwrap.dedent(f"""
        import sys
        from app.packs import load_pack
        from app.assistant import Assistant
        a = Assistant(load_pack("medical", {str(pack.index_dir)!r})).load(generator=False)
        hits = a.retriever.search("What are the symptoms of whooping cough?", 1)
        print(hits[0].name, a.embedder.query_runtime, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["pertussis.txt", "onnx", "False"]


def test_onnx_batches_with_padding_match_torch():
    """One exported graph embeds a padded batch as torch does (the padding is masked, not attended to)."""
    from app.embedder import Embedder
    from app.onnx_encoder import OnnxEncoder
    from app.settings import EmbedderSettings

    texts = ["Pertussis.", "Net income rose 12% to $4.1 billion in fiscal 2023 on higher cloud revenue. " * 3]
    torch_fp32 = Embedder(EmbedderSettings(precision="fp32"))
    onnx = OnnxEncoder(Path(torch_fp32.model_path), 256).load()
    cos = (onnx.encode_batch(texts) * torch_fp32.encode(texts)).sum(axis=1)
    assert cos.min() > 0.9999, cos


def test_int8_embedder_is_onnx_close_to_fp32_and_an_embedder_of_its_own(tmp_path, tmp_pack):
    """precision int8: documents and questions through ONNX Runtime with int8 weights (no torch model),
    close to fp32; an index built with another precision is refused with a way out, both ways."""
    import pytest

    from app.assistant import Assistant
    from app.embedder import Embedder
    from app.errors import IndexDamaged
    from app.settings import EmbedderSettings

    texts = ["Amoxicillin 1 g three times daily for five days.", "The lease ends on 31 March 2027.",
             "Net income rose 12% to $4.1 billion in fiscal 2023 on higher cloud revenue. " * 3]
    int8 = Embedder(EmbedderSettings(precision="int8")).load()
    fp32 = Embedder(EmbedderSettings(precision="fp32"))
    assert (int8.precision, int8.query_runtime, int8._model) == ("int8", "onnx", None)
    assert int8.identity == "packaged:minilm#int8" and fp32.identity == "packaged:minilm"
    a = int8.encode(texts)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert (a * fp32.encode(texts)).sum(axis=1).min() > 0.98
    # Activations are quantized with one scale per batch, so a text's vector moves a little with its
    # batch-mates (alone as a question vs. in a padded batch of chunks); a little, not more.
    alone = np.stack([int8.encode_query(t) for t in texts])
    assert (alone * a).sum(axis=1).min() > 0.99, (alone * a).sum(axis=1)
    with pytest.raises(ValueError, match="query_runtime"):
        EmbedderSettings(precision="int8", query_runtime="torch")

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pertussis.txt").write_text("Pertussis causes paroxysmal cough, inspiratory whoop and vomiting.\n")
    (docs / "lease.txt").write_text("The lease of the clinic building ends on 31 March 2027.\n")
    pack = tmp_pack("medical")
    pack.config.embedder.precision = "int8"
    assert Ingestor(pack).ingest([docs]).failed == []
    assistant = Assistant(pack).load(generator=False)
    assert assistant.retriever.search("What are the symptoms of whooping cough?", 1, mode="dense")[0].name == "pertussis.txt"
    pack.config.embedder.precision = "bf16"
    with pytest.raises(IndexDamaged, match="#int8"):
        Assistant(pack).load(generator=False)
    with pytest.raises(IndexDamaged, match="ingest again"):
        Ingestor(pack).ingest([docs])


def test_long_pdf_embedded_in_several_batches_keeps_vectors_in_order(tmp_path, pdf_factory, tmp_pack):
    """A long PDF's chunks are embedded in several batches (while the parsing thread reads the next file)
    and joined when the last one is in; every vector must stay with its chunk, in every file."""
    from app.embedder import Embedder

    pack = tmp_pack("medical")
    pack.config.embedder.batch_size = 2  # embedding batches of 8 chunks: each long file spans several
    topics = ["aspirin", "insulin", "measles", "knee surgery", "migraine", "asthma", "kidney stones", "sleep apnoea",
              "hand hygiene", "iron deficiency", "melanoma", "tetanus", "gout", "glaucoma", "scabies", "rickets",
              "anaemia", "psoriasis", "vertigo", "tinnitus"]
    pdfs = []
    for half in (0, 1):
        pdf = tmp_path / f"long{half}.pdf"
        pdf_factory(pdf, [f"Chapter {i + 1} of volume {half + 1} is about {t}: causes, signs and treatment of {t} "
                          f"in {'adults' if half else 'children'}." for i, t in enumerate(topics)])
        pdfs.append(pdf)
    (tmp_path / "short.txt").write_text("A short note on hay fever and antihistamines.\n")
    summary = Ingestor(pack).ingest([pdfs[0], tmp_path / "short.txt", pdfs[1]])
    assert summary.failed == [] and len(summary.added) == 3
    assert summary.chunks > 2 * pack.config.embedder.batch_size * 4  # more chunks than one embedding batch
    snap = IndexStore(pack.index_dir).snapshot()
    vids = [c.vid for c in snap.chunks]
    stored = np.stack([snap.vector(v) for v in vids])
    embedder = Embedder(pack.config.embedder, pack.path)
    for c in snap.chunks:
        assert vids[int(np.argmax(stored @ embedder.encode_query(c.text)))] == c.vid, (c.page, c.text)


def test_bf16_is_chosen_only_where_the_cpu_has_amx():
    """AVX512-BF16 without AMX ran bf16 autocast slower than fp32 (app.embedder.native_bf16's docstring)."""
    from app.embedder import bf16_pays

    assert bf16_pays("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert not bf16_pays("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert not bf16_pays("flags\t\t: fpu sse2\n") and not bf16_pays("")
