"""The chat UI: unit tests of app/ui_support.py, then the real app through streamlit's AppTest.

The AppTest part runs ``streamlit_app.py`` in-process on the packaged models (MiniLM + SmolLM2) with
the index root in a temporary folder (SLMRAG_INDEX_DIR): chat flow with sources, per-pack history,
abstention, readable errors, uploads (sanitised names, size limit, ingest, retrieval) and removal.
To stay quick on shared CPUs only one question is actually generated (k=2, 16 tokens); abstentions use
the pack's abstain template and so show retrieval without generating.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from app import ui_support as ui
from app.errors import InputError

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "streamlit_app.py"
APP_TIMEOUT = 420  # seconds per AppTest run: model loads and generation are slow on shared cores


# ================================================================================ ui_support unit tests
@pytest.mark.parametrize("raw, safe", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd.txt", "passwd.txt"),
    ("/abs/path/notes.md", "notes.md"),
    ("C:\\Users\\me\\Annual Report.PDF", "Annual Report.pdf"),
    ("..\\..\\win.html", "win.html"),
    ("we<ird>|na*me?.txt", "we_ird_na_me_.txt"),
    ("a\x00b\nc.txt", "abc.txt"),
    ("con.txt", "upload_con.txt"),
    ("ＦＵＬＬ.txt", "FULL.txt"),
])
def test_sanitize_upload_name(raw, safe):
    assert ui.sanitize_upload_name(raw) == safe


@pytest.mark.parametrize("raw, why", [
    (".bashrc.txt", "hidden"), ("../.env.md", "hidden"), ("..", "usable"), ("", "usable"), ("dir/", "usable"),
    ("noext", "no type"), ("evil.exe", "unsupported"), ("archive.tar.gz", "unsupported"), ("x.pdf.sh", "unsupported"),
])
def test_sanitize_upload_name_refuses(raw, why):
    with pytest.raises(InputError, match=why):
        ui.sanitize_upload_name(raw)


def test_sanitize_upload_name_shortens_keeping_suffix():
    name = ui.sanitize_upload_name("x" * 400 + ".markdown")
    assert len(name) <= ui.MAX_NAME_CHARS and name.endswith(".markdown")


def test_save_upload_stays_in_folder_and_enforces_limits(tmp_path):
    folder = tmp_path / "idx" / "uploads"
    p = ui.save_upload(folder, "../../../escape.txt", b"hello", max_bytes=100)
    assert p == (folder / "escape.txt").resolve() and p.read_bytes() == b"hello"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "idx" / "escape.txt").exists()
    p2 = ui.save_upload(folder, "escape.txt", b"v2", max_bytes=100)  # same name: replaced atomically
    assert p2 == p and p.read_bytes() == b"v2"
    assert sorted(x.name for x in folder.iterdir()) == ["escape.txt"]  # no temp files left behind
    with pytest.raises(InputError, match="over the upload limit"):
        ui.save_upload(folder, "big.txt", b"x" * 101, max_bytes=100)
    with pytest.raises(InputError, match="empty"):
        ui.save_upload(folder, "empty.txt", b"", max_bytes=100)
    with pytest.raises(InputError, match="hidden"):
        ui.save_upload(folder, ".secret.txt", b"x", max_bytes=100)
    # A symlink planted in the uploads folder is never written through.
    (folder / "link.txt").symlink_to(tmp_path / "target.txt")
    with pytest.raises(InputError):
        ui.save_upload(folder, "link.txt", b"x", max_bytes=100)
    assert not (tmp_path / "target.txt").exists()


def test_upload_limit_and_results(tmp_path, monkeypatch):
    from app.packs import load_pack
    from ingest.ingestor import IngestSummary

    pack = load_pack("medical", tmp_path / "medical")
    assert ui.uploads_dir(pack) == tmp_path / "medical" / "uploads"
    monkeypatch.setenv("SLMRAG_UI_MAX_UPLOAD_MB", "3")
    assert ui.upload_limit_mb(pack) == 3
    monkeypatch.setenv("SLMRAG_UI_MAX_UPLOAD_MB", "junk")
    assert ui.upload_limit_mb(pack) == min(ui.DEFAULT_UPLOAD_MAX_MB, pack.config.ingest.max_file_mb)
    a, b, c, d = (str(tmp_path / n) for n in ("a.txt", "b.txt", "c.pdf", "d.md"))
    summary = IngestSummary(added=[a], updated=[b], skipped=[d],
                            failed=[{"path": c, "error": f"{c}: no extractable text on any page"}])
    saved = {"a.txt": Path(a), "b.txt": Path(b), "c.pdf": Path(c), "d.md": Path(d)}
    results = ui.upload_results(saved, [{"name": ".x.txt", "error": "hidden files are not accepted"}], summary)
    assert [(r["name"], r["status"]) for r in results] == [
        (".x.txt", "failed"), ("a.txt", "added"), ("b.txt", "updated"), ("c.pdf", "failed"), ("d.md", "skipped")]
    assert results[3]["detail"] == "c.pdf: no extractable text on any page"  # no server paths shown
    assert ui.is_upload(str(tmp_path / "medical" / "uploads" / "a.txt"), pack)
    assert not ui.is_upload(str(pack.corpus_path / "x.txt"), pack)


def test_linkify_citations():
    out = ui.linkify_citations("INR 2-3 [1]. See [3] and [9].", "medical-4", valid=[1, 3])
    assert "[\\[1\\]](#src-medical-4-1)" in out and "[\\[3\\]](#src-medical-4-3)" in out
    assert out.endswith("[9].")  # not a valid source number: left as text
    assert ui.anchor_id("a b/c", 2) == "src-a-b-c-2"


def _passage(n, name="warfarin.txt", page=None, text="Target INR 2.0 to 3.0.", kept=True, fs=0.6):
    from app.retrieval import Passage

    return Passage(vid=n, doc_id=f"d{n}", source=f"/docs/{name}", name=name, page=page, text=text, heading="INR",
                   start=10 * n, end=10 * n + len(text), score=0.03, rank=n, filter_score=fs, kept=kept)


def test_threshold_slider_steps_to_the_digits_of_the_packs_threshold():
    """A threshold under 0.05 (finance's trained model: 0.0066) gets a 0.0001 step and four decimals, so the
    slider can set values around it and the caption does not print 0.01; cosine's 0.3657 keeps 0.01 and two."""
    assert ui.threshold_step(0.0066) == 0.0001 and ui.threshold_text(0.0066) == "0.0066"
    assert ui.threshold_step(0.3657) == 0.01 and ui.threshold_text(0.3657) == "0.37"
    assert ui.threshold_step(0.05) == 0.01 and ui.threshold_text(0.2) == "0.20"


def test_answer_record_and_export():
    from app.answer import Answer

    p1, p2, p3 = _passage(1, page=2), _passage(2, "b.md", text="Other."), _passage(3, kept=False, fs=0.05)
    ans = Answer("What INR?", "Aim for 2.0-3.0 [2].", False,
                 [{"n": 2, "source": p2.source, "name": p2.name, "page": None, "heading": "", "text": p2.text}],
                 [p1, p2, p3], [p1, p2], "Verify clinically.",
                 {"retrieve_s": 0.05, "filter_s": 0.01, "first_token_s": 1.2, "total_s": 3.4, "tokens": 20,
                  "tokens_per_s": 9.1, "load_s": 0.0}, {"kind": "cosine", "threshold": 0.2, "min_keep": 0})
    rec = ui.answer_record(ans)
    assert [c["n"] for c in rec["citations"]] == [2]
    assert rec["citations"][0]["start"] == 20 and rec["citations"][0]["name"] == "b.md"
    assert [ui.passage_status(p) for p in rec["passages"]] == ["used", "used", "dropped"]
    assert rec["filter"] == {"kind": "cosine", "threshold": 0.2, "min_keep": 0}
    assert [ui.filter_score_text(p) for p in rec["passages"]] == ["0.600", "0.600", "0.050"]
    # a trained filter's cosine_keep / cosine_floor decided these: the model did not score them
    p1.filter_score, p1.extra = None, {"kept_by": "cosine", "cosine": 0.61}
    p3.filter_score, p3.extra = None, {"dropped_by": "cosine", "cosine": 0.2}
    rec = ui.answer_record(ans)
    assert [ui.filter_score_text(p) for p in rec["passages"]] == ["cosine 0.610, kept on it", "0.600",
                                                                  "cosine 0.200, dropped on it"]
    # filter.relative_to_best read p3's score against the question's best: the model's own is shown beside it
    p1.filter_score, p1.extra, p3.filter_score, p3.extra = 0.6, {}, 0.05, {"model_score": 0.3}
    rec = ui.answer_record(ans)
    assert ui.filter_score_text(rec["passages"][2]) == "0.050 (model 0.300, read in its question)"
    p3.extra = {}

    from app.answer import cite_dict

    abstain = Answer("Mars?", "I could not find this [1] [2].", True, [], [p3, p1], [], "", {"total_s": 0.1},
                     {"kind": "cosine", "threshold": 0.2, "min_keep": 0},
                     nearest=[cite_dict(1, p3), cite_dict(2, p1)], decided_by="filter", reason="filter")
    arec = ui.answer_record(abstain)
    assert arec["abstain_reason"] == "filter"
    assert arec["abstained"] and [c["n"] for c in arec["citations"]] == [1, 2]  # nearest, in retrieval order
    assert ui.abstain_reason(arec) == "filter"

    turns = [{"question": "What INR?", "answer": rec}, {"question": "Mars?", "answer": arec},
             {"question": "bad", "error": "The question is empty."}]
    md = ui.conversation_markdown(turns, title="Clinical", pack="medical", disclaimer="Verify clinically.",
                                  now=1_700_000_000)
    assert md.startswith("# Clinical: conversation") and "> Verify clinically." in md
    assert "## Q1. What INR?" in md and "Aim for 2.0-3.0 [2]." in md
    assert '**[2] b.md**: "Other."' in md
    assert "## Q2. Mars?" in md and "Not found in your documents" in md and "[2] warfarin.txt, page 2" in md
    assert "**Error:** The question is empty." in md
    assert "first token 1.2 s" in md
    assert ui.export_file_name("medical", 1_700_000_000) == "slmrag-medical-20231114-2213.md"
    assert "No questions asked yet" in ui.conversation_markdown([], title="T", pack="p")


def test_format_helpers():
    t = {"retrieve_s": 0.0412, "filter_s": 0.2, "first_token_s": 1.53, "total_s": 4.0, "tokens": 30,
         "tokens_per_s": 12.34, "load_s": 2.0}
    s = ui.format_timings(t)
    assert s == ("model load 2.0 s · retrieve 41 ms · filter 200 ms · first token 1.5 s · total 4.0 s · "
                 "30 tokens, 12.3 tok/s")
    assert ui.format_timings({}) == ""
    assert ui.format_when(None) == "never"
    assert ui.format_when(1_700_000_000, now=1_700_000_000 + 125) == "2023-11-14 22:13 UTC (2 min ago)"
    assert ui.short_error(ValueError("x\n  y")) == "ValueError: x y"
    assert ui.excerpt("a " * 300, 20).endswith("…")
    assert ui.markdown_text("Revenue $1.2m, not \\$3") == "Revenue \\$1.2m, not \\$3"  # no LaTeX math
    html = ui.highlight_html("<b>before</b>", "the <script>x</script>", " after")
    assert "<script>" not in html and '<mark class="slm-hl">the &lt;script&gt;' in html


def test_passage_context_text_document(tmp_path):
    doc = tmp_path / "guide.md"
    body = "# Guide\n\n" + "Intro words here. " * 40 + "\n\nTarget INR is 2.0 to 3.0 for AF.\n\n" + "Tail text. " * 80
    doc.write_text(body)
    passage = "Target INR is 2.0 to 3.0 for AF."
    start = body.index(passage)
    rec = {"source": str(doc), "name": doc.name, "page": None, "start": start, "end": start + len(passage),
           "text": passage}
    ctx = ui.passage_context(rec)
    assert ctx.found and ctx.match == passage and ctx.kind == "markdown"
    assert ctx.before.endswith("\n\n") and "Intro words" in ctx.before and ctx.after.startswith("\n\nTail")
    assert len(ctx.before) <= 240 and len(ctx.after) <= 700
    assert f'<mark class="slm-hl">{passage}</mark>' in ctx.html()
    # The file changed since it was indexed: the span is stale, the passage is found by its text.
    doc.write_text("New first line.\n" + body)
    ctx = ui.passage_context(rec)
    assert ctx.found and ctx.match == passage
    # Gone: the stored passage is shown with a note.
    doc.unlink()
    ctx = ui.passage_context(rec)
    assert not ctx.found and "no longer on disk" in ctx.note and ctx.match == passage


def test_passage_context_redacts_like_ingest(tmp_path):
    from ingest.redact import redact

    doc = tmp_path / "note.txt"
    raw = "Patient: John Smith, MRN: 12345678.\n\nPlan: start warfarin 5 mg daily; INR check on day 3.\n"
    doc.write_text(raw)
    red, _ = redact(raw)  # ingest stores offsets into the redacted text
    passage = "Plan: start warfarin 5 mg daily; INR check on day 3."
    start = red.index(passage)
    ctx = ui.passage_context({"source": str(doc), "page": None, "start": start, "end": start + len(passage),
                              "text": passage}, redact_pii=True)
    assert ctx.found and "John Smith" not in ctx.before and "12345678" not in ctx.before


def test_passage_context_pdf_page(tmp_path, pdf_factory):
    from ingest.loaders import load

    pdf = pdf_factory(tmp_path / "guide.pdf", ["Page one about blood pressure.",
                                              "Page two. Warfarin target INR is 2.0 to 3.0. More text follows."])
    page_text = [p.text for p in load(pdf)[1]][1]
    passage = "Warfarin target INR is 2.0 to 3.0."
    start = page_text.index(passage)
    ctx = ui.passage_context({"source": str(pdf), "name": "guide.pdf", "page": 2, "start": start,
                              "end": start + len(passage), "text": passage})
    assert ctx.kind == "pdf" and ctx.page == 2 and ctx.found and ctx.match == passage
    assert "Page two." in ctx.before and "blood pressure" not in ctx.before + ctx.after
    ctx = ui.passage_context({"source": str(pdf), "page": 7, "start": 0, "end": 5, "text": "x"})
    assert not ctx.found and "Page 7" in ctx.note


def _pdf_passage(tmp_path, pdf_factory) -> dict:
    pdf = pdf_factory(tmp_path / "guide.pdf", ["Warfarin target INR is 2.0 to 3.0."])
    return {"source": str(pdf), "name": "guide.pdf", "page": 1, "start": 0, "end": 8, "text": "Warfarin"}


def test_passage_context_pdf_without_pdfium(tmp_path, pdf_factory, monkeypatch):
    """pypdfium2 is optional: without it the viewer shows the page's text and no image."""
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # `import pypdfium2` now raises ImportError
    assert not ui.pdfium_available()
    rec = _pdf_passage(tmp_path, pdf_factory)
    ctx = ui.passage_context(rec)
    assert ctx.found and ctx.image is None and ui.render_pdf_page(rec["source"], 1) is None


def test_passage_context_pdf_with_pdfium(tmp_path, pdf_factory):
    pytest.importorskip("pypdfium2", reason="optional dependency: renders the PDF page beside its text")
    ctx = ui.passage_context(_pdf_passage(tmp_path, pdf_factory))
    assert ctx.found and ctx.image and ctx.image.startswith(b"\x89PNG")


# ================================================================================ the app through AppTest
# Each test opens its own app session (an AppTest: its own session state, history and settings), so it
# passes alone and in any order. The app's Assistant (models + index) is cached per pack and index root
# for the whole process, as a server shares it between browser sessions; the tests that only read the
# index share one copy of it so the models load once, and the test that changes it gets its own.
@pytest.fixture(scope="module")
def shared_root(tmp_path_factory, prebuilt_indexes) -> Path:
    root = tmp_path_factory.mktemp("ui-indexes")
    shutil.copytree(prebuilt_indexes, root, dirs_exist_ok=True)
    return root


@pytest.fixture
def ui_env(shared_root, monkeypatch) -> Path:
    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(shared_root))
    monkeypatch.setenv("SLMRAG_DEFAULT_PACK", "medical")
    monkeypatch.setenv("SLMRAG_UI_MAX_UPLOAD_MB", "0.05")  # 50 kB: lets the test hit the upload size limit
    return shared_root


@pytest.fixture
def own_index_root(ui_env, tmp_path, prebuilt_indexes, monkeypatch) -> Path:
    """A private copy of the indexes, for a test that adds or removes documents."""
    root = tmp_path / "ui-indexes"
    shutil.copytree(prebuilt_indexes, root)
    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(root))
    return root


def run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]  # never a traceback in the page
    return at


def texts(block) -> str:
    return "\n".join([m.value for m in block.markdown] + [c.value for c in block.caption])


def turns(at, pack="medical") -> list[dict]:
    return at.session_state["history"].get(pack, [])


def new_app():
    """A new session on the medical pack; short answers (k=2, 16 tokens) keep generation quick."""
    from streamlit.testing.v1 import AppTest

    at = run(AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT))
    assert at.title[0].value == "Clinical Literature Assistant"
    at.slider(key="k::medical").set_value(2)
    at.slider(key="max_tokens::medical").set_value(16)
    return at


@pytest.fixture
def app(ui_env):
    return new_app()


def ask(at, question: str) -> dict:
    at.chat_input(key="question").set_value(question)
    run(at)
    return turns(at)[-1]


def strict(at):
    """A threshold no passage passes: questions abstain, so they show retrieval without generating."""
    at.slider(key="threshold::medical").set_value(0.99)
    return at


@pytest.mark.slow
def test_chat_flow_streams_answer_with_sources(app):
    at = app
    t0 = time.perf_counter()
    turn = ask(at, "What is the target INR range for warfarin therapy?")
    print(f"\n[apptest] question answered in {time.perf_counter() - t0:.1f}s: {turn['answer']['answer']!r}")
    assert not at.error
    msgs = at.chat_message
    assert [m.name for m in msgs] == ["user", "assistant"]
    assert msgs[0].markdown[0].value == "What is the target INR range for warfarin therapy?"
    assert len(turns(at)) == 1
    ans = turn["answer"]
    assert not ans["abstained"] and ans["answer"].strip()
    assert 1 <= len(ans["citations"]) <= 2 and len(ans["passages"]) == 2  # k=2 from the settings panel
    assert ans["timings"]["tokens"] <= 16  # max tokens from the settings panel
    body = texts(msgs[1])
    assert "anticoagulation_warfarin.txt" in body  # the cited source card (file name, passage text)
    for c in ans["citations"]:
        assert f'id="src-medical-{turn["id"]}-{c["n"]}"' in body  # anchor the [n] links point to
        assert ui.html.escape(ui.excerpt(c["text"], 420)) in body
    # Generation is greedy, so this answer is always the same, and it cites: its [n] markers are links.
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", ans["answer"])} & {c["n"] for c in ans["citations"]}
    assert cited, f"the answer cites none of its sources: {ans['answer']!r}"
    for n in cited:
        assert f"[\\[{n}\\]](#src-medical-{turn['id']}-{n})" in body
    assert "first token" in body and "total" in body  # timings in small print
    assert "Clinical decision support only" in body  # the pack's disclaimer
    labels = [e.label for e in msgs[1].expander]
    assert any(lbl.startswith("Noise filter: 2 retrieved") for lbl in labels)
    assert any(lbl.startswith("Show [") and lbl.endswith("in context") for lbl in labels)
    assert '<mark class="slm-hl">' in body  # the source viewer highlights the passage in its document
    # The export has the question, the answer and its sources.
    md = ui.conversation_markdown(turns(at), title="Clinical Literature Assistant", pack="medical")
    assert "## Q1. What is the target INR range" in md and "anticoagulation_warfarin.txt" in md
    assert at.button(key="clear::medical").disabled is False
    assert at.get("download_button")[0].disabled is False


@pytest.mark.slow
def test_pack_switch_keeps_history_and_settings_per_pack(app):
    at = strict(app)
    ask(at, "Which football club won the 1998 league title?")
    at.selectbox(key="pack").set_value("legal")
    run(at)
    assert at.title[0].value == "Contract Review Assistant"
    assert len(at.chat_message) == 0 and turns(at, "legal") == []
    sidebar = texts(at.sidebar)
    assert "documents" in sidebar and "chunks" in sidebar and "Last ingest: 20" in sidebar
    # k/threshold/max-token settings are per pack and kept per session.
    assert at.slider(key="k::legal").value == 5
    # legal drops no passage (filter.kind none behind its gate): its threshold slider is off and says why
    legal_threshold = at.slider(key="threshold::legal")
    assert legal_threshold.disabled and "question gate decides" in legal_threshold.help
    at.selectbox(key="pack").set_value("medical")
    run(at)
    assert at.title[0].value == "Clinical Literature Assistant"
    assert [m.name for m in at.chat_message] == ["user", "assistant"] and len(turns(at)) == 1
    assert at.slider(key="k::medical").value == 2 and at.slider(key="max_tokens::medical").value == 16
    assert at.slider(key="threshold::medical").value == 0.99


@pytest.mark.slow
def test_abstention_is_plain_and_shows_nearest_sources(app):
    at = strict(app)
    last = ask(at, "Which football club won the 1998 league title?")["answer"]
    assert last["abstained"] and last["citations"] and last["filter"]["threshold"] == 0.99
    body = texts(at.chat_message[-1])
    assert "Not found in your documents." in body and "Nearest sources" in body
    assert "dropped" in body and not at.error


@pytest.mark.slow
def test_example_questions_are_clickable(app):
    from app.packs import load_pack

    examples = load_pack("medical").config.examples
    assert examples, "the medical pack ships example questions"
    at = strict(app)  # the example abstains: nothing is generated
    at.button(key="ex-side::medical::0").click()
    run(at)
    assert [t["question"] for t in turns(at)] == [examples[0]]
    assert at.chat_message[-2].markdown[0].value == ui.markdown_text(examples[0])


@pytest.mark.slow
def test_errors_are_readable_messages(app):
    at = app
    at.chat_input(key="question").set_value("\x00\x07  ")
    run(at)
    assert at.error and "The question is empty" in at.error[-1].value
    assert "Traceback" not in at.error[-1].value


@pytest.mark.slow
def test_upload_sanitises_refuses_ingests_and_removes(own_index_root):
    at = strict(new_app())
    fact = ("Zebrafield Clinic protocol: every patient on the quokka regimen needs a lumen score check "
            "every 17 days, recorded by the duty pharmacist.\n")
    at.file_uploader[0].set_value([
        ("../../../zebrafield_protocol.txt", fact.encode(), "text/plain"),  # traversal: sanitised
        (".hidden_notes.txt", b"secret", "text/plain"),  # hidden: refused
        ("huge.txt", b"word " * 20_000, "text/plain"),  # 100 kB > 50 kB limit: refused
    ])
    run(at)
    at.button(key="add::medical").click()
    run(at)
    results = {r["name"]: r for r in at.session_state["upload_results"]["medical"]}
    assert results["zebrafield_protocol.txt"]["status"] == "added"
    assert results[".hidden_notes.txt"]["status"] == "failed" and "hidden" in results[".hidden_notes.txt"]["detail"]
    assert results["huge.txt"]["status"] == "failed" and "upload limit" in results["huge.txt"]["detail"]
    uploads = own_index_root / "medical" / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["zebrafield_protocol.txt"]
    assert not list(own_index_root.parent.glob("zebrafield*")) and not list(own_index_root.glob("zebrafield*"))
    side = texts(at.sidebar)
    assert "zebrafield_protocol.txt" in side and "<b>6</b><span>documents</span>" in side
    assert len(at.file_uploader) == 1 and not at.file_uploader[0].value  # the uploader was reset
    # Retrievable at once (the strict threshold makes it abstain, so nothing is generated, but the
    # nearest sources show what retrieval found).
    last = ask(at, "How often is the lumen score checked under the Zebrafield protocol?")["answer"]
    assert last["passages"][0]["name"] == "zebrafield_protocol.txt"
    assert "zebrafield_protocol.txt" in texts(at.chat_message[-1])
    # Removal: out of the index, and the uploaded copy is deleted.
    rm = at.selectbox(key="remove::medical")
    rm.select_index(list(rm.options).index("zebrafield_protocol.txt"))
    run(at)
    at.button(key="remove-btn::medical").click()
    run(at)
    assert "Removed zebrafield_protocol.txt" in texts(at.sidebar)
    assert "<b>5</b><span>documents</span>" in texts(at.sidebar)
    assert not (uploads / "zebrafield_protocol.txt").exists()


@pytest.mark.slow
def test_clear_chat(app):
    at = strict(app)
    ask(at, "Which football club won the 1998 league title?")
    assert len(turns(at)) == 1 and at.button(key="clear::medical").disabled is False
    at.button(key="clear::medical").click()
    run(at)
    assert turns(at) == [] and len(at.chat_message) == 0
    assert at.button(key="clear::medical").disabled


def test_abstain_reason_names_the_check_that_turned_the_question_away():
    """Each abstention is explained by what decided it; the topic gate's verdict is its own reason."""
    from app import ui_support as ui

    assert ui.abstain_reason({"decided_by": "filter", "filter": {"kind": "cosine"}}) == "filter"
    assert ui.abstain_reason({"decided_by": "filter", "filter": {"off_topic": False}}) == "filter"
    assert ui.abstain_reason({"decided_by": "filter", "filter": {"off_topic": True}}) == "off_topic"
    assert ui.abstain_reason({"decided_by": "filter", "filter": {"gate": 0.5, "gate_score": 0.4, "gated": True}}) == "gated"
    assert ui.abstain_reason({"decided_by": "filter", "filter": {"off_topic": True, "gated": True}}) == "off_topic"
    assert ui.abstain_reason({"decided_by": "lexical", "withheld": True}) == "unsupported"
    assert ui.abstain_reason({"decided_by": "document"}) == "unnamed"
    assert ui.abstain_reason({"decided_by": "document", "abstain_reason": "other_document"}) == "other_document"
    assert ui.check_note({"decided_by": "document", "abstain_reason": "other_document"}).startswith(
        "The answer came from a document the question does not name")
    assert ui.abstain_reason({"decided_by": "model"}) == "model"
    # An answer that carries its reason (every answer since answers did) is explained by it, not re-derived.
    assert ui.abstain_reason({"decided_by": "filter", "filter": {}, "abstain_reason": "off_topic"}) == "off_topic"
