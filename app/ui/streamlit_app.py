"""slmrag chat UI: thin Streamlit glue over app/ (run with `slmrag ui`, or `streamlit run streamlit_app.py` in a checkout).

The work is done by :class:`app.assistant.Assistant` (one per pack, built once per server process with
``st.cache_resource``) and by the Streamlit-free helpers in :mod:`app.ui_support`; this file only lays
out the page and keeps the per-session state (chat history per pack, settings, upload results).
All browser sessions share the Assistants and their :class:`~app.queueing.AnswerQueue` (packs whose
models run on this machine's cores share one): a question asked while others are being answered waits
its turn and shows its place in the chat. Uploads are ingested at low priority (:mod:`app.pacing`).
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path

import streamlit as st

import app  # noqa: F401  (sets the offline environment before any model library is imported)
from app import ui_support as ui
from app.errors import SlmragError
from app.packs import index_root, list_packs, load_pack
from app.settings import IngestSettings
from app.assistant import Assistant, AskOptions
from app.pacing import ingest_in_background
from app.queueing import AnswerQueue, ahead_message, resource_key
from ingest.starter import ensure_index

log = logging.getLogger("slmrag.ui")

st.set_page_config(page_title="slmrag · document assistant", page_icon="📚", layout="wide",
                   initial_sidebar_state="expanded")

CSS = """
<style>
.block-container {padding-top: 2.2rem; max-width: 1100px;}
section[data-testid="stSidebar"] .block-container {padding-top: 1.2rem;}
.slm-brand {font-weight: 700; font-size: 1.15rem; letter-spacing: .02em;}
.slm-brand span {color: #6b7280; font-weight: 400; font-size: .8rem; margin-left: .35rem;}
.slm-sub {color: #6b7280; font-size: .95rem; margin: -.4rem 0 .8rem 0;}
.slm-disclaimer {border-left: 3px solid #d97706; background: rgba(217,119,6,.07); padding: .45rem .7rem;
  border-radius: 4px; font-size: .82rem; color: #5b4a2e; margin: .2rem 0 .8rem 0;}
.slm-stats {display: flex; gap: .5rem; margin: .2rem 0 .3rem 0;}
.slm-stats div {flex: 1; border: 1px solid rgba(49,51,63,.12); border-radius: 8px; padding: .35rem .55rem;}
.slm-stats b {display: block; font-size: 1.15rem;}
.slm-stats span {font-size: .72rem; color: #6b7280; text-transform: uppercase; letter-spacing: .04em;}
.slm-small {font-size: .76rem; color: #6b7280;}
.slm-label {font-size: .72rem; font-weight: 600; color: #6b7280; text-transform: uppercase;
  letter-spacing: .06em; margin: .6rem 0 .2rem 0;}
.slm-src {border: 1px solid rgba(49,51,63,.13); border-radius: 8px; padding: .45rem .7rem; margin: .3rem 0;
  background: rgba(248,249,251,.9); scroll-margin-top: 4rem;}
.slm-src:target {outline: 2px solid #2563eb; outline-offset: 1px;}
.slm-src .slm-n {display: inline-block; min-width: 1.7rem; font-weight: 700; color: #2563eb;}
.slm-src .slm-name {font-weight: 600; font-size: .88rem;}
.slm-src .slm-meta {color: #6b7280; font-size: .78rem; margin-left: .3rem;}
.slm-src .slm-text {font-size: .84rem; color: #374151; margin-top: .2rem; line-height: 1.45;}
.slm-context {white-space: pre-wrap; font-size: .86rem; line-height: 1.5; max-height: 420px; overflow: auto;
  padding: .6rem .8rem; border-radius: 6px; background: #fcfcfd; border: 1px solid rgba(49,51,63,.1);}
mark.slm-hl {background: #fde68a; padding: 0 .1rem; border-radius: 2px;}
.slm-abstain {border-left: 3px solid #6b7280; background: rgba(107,114,128,.08); padding: .55rem .8rem;
  border-radius: 4px;}
.slm-abstain b {display: block; margin-bottom: .2rem;}
.slm-label-answer {display: inline-block; font-weight: 700; padding: .1rem .6rem; border-radius: .4rem;
  background: #eef2ff; color: #3730a3; margin-bottom: .3rem;}
table.slm-filter {width: 100%; border-collapse: collapse; font-size: .8rem;}
table.slm-filter th {text-align: left; color: #6b7280; font-weight: 600; border-bottom: 1px solid #e5e7eb;
  padding: .25rem .35rem;}
table.slm-filter td {border-bottom: 1px solid #f1f2f4; padding: .25rem .35rem; vertical-align: top;}
.slm-tag {display: inline-block; padding: 0 .4rem; border-radius: 999px; font-size: .72rem; font-weight: 600;}
.slm-used {background: #dcfce7; color: #166534;}
.slm-kept {background: #e0e7ff; color: #3730a3;}
.slm-dropped {background: #fee2e2; color: #991b1b;}
.slm-result {font-size: .82rem; margin: .15rem 0;}
.slm-result .slm-tag {margin-right: .35rem;}
[data-testid="stAppDeployButton"] {display: none;}
section[data-testid="stSidebar"] [data-testid="stExpander"] button[kind="tertiary"] {justify-content: flex-start;
  text-align: left; padding: .2rem 0; font-size: .85rem;}
section[data-testid="stSidebar"] [data-testid="stExpander"] button[kind="tertiary"] p {text-align: left;}
.slm-doclist {font-size: .8rem; margin: .1rem 0 .5rem 0; line-height: 1.35;}
.slm-doclist div {padding: .12rem 0; border-bottom: 1px solid rgba(49,51,63,.06); overflow-wrap: anywhere;}
</style>
"""


# ------------------------------------------------------------------------------------------ resources
@st.cache_resource(show_spinner="Loading the pack's models and index (the first use of a pack also "
                                "indexes its starter corpus)…")
def get_assistant(pack_name: str, root: str) -> Assistant:
    """One Assistant (models + index) per pack and index root, shared by all sessions; built once."""
    pack = load_pack(pack_name, Path(root) / pack_name)
    ensure_index(pack)
    gen = pack.config.generator
    return Assistant(pack, queue=answer_queue(resource_key(gen), gen.concurrency)).load()


@st.cache_resource(show_spinner=False)
def answer_queue(resource: str, capacity: int) -> AnswerQueue:
    """One queue per thing answers compete for (this machine's cores, or one server), for all sessions."""
    return AnswerQueue(capacity)


@st.cache_data(show_spinner=False, ttl=300)
def pack_titles(names: tuple[str, ...]) -> dict[str, str]:
    titles = {}
    for name in names:
        try:
            titles[name] = load_pack(name).config.title
        except SlmragError:
            titles[name] = name
    return titles


@st.cache_data(show_spinner=False, max_entries=256)
def source_context(source: str, mtime: float, page: int | None, start: int, end: int, text: str,
                   redact_pii: bool, max_pages: int, timeout_s: float) -> ui.SourceContext:
    rec = {"source": source, "name": Path(source).name, "page": page, "start": start, "end": end, "text": text}
    return ui.passage_context(rec, redact_pii=redact_pii, max_pages=max_pages, timeout_s=timeout_s)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


# ------------------------------------------------------------------------------------------ state
def state():
    ss = st.session_state
    ss.setdefault("history", {})
    ss.setdefault("upload_results", {})
    ss.setdefault("doc_messages", {})
    ss.setdefault("uploader_nonce", 0)
    ss.setdefault("turn_seq", 0)
    return ss


def history_of(pack: str) -> list[dict]:
    return state()["history"].setdefault(pack, [])


def clear_history(pack: str) -> None:
    state()["history"][pack] = []


def queue_question(pack: str, question: str) -> None:
    state()["pending"] = {"pack": pack, "question": question}


# ------------------------------------------------------------------------------------------ rendering
def render_source_card(rec: dict, anchor: str) -> None:
    page = f"page {rec['page']}" if rec.get("page") else ""
    heading = rec.get("heading") or ""
    meta = " · ".join(x for x in (page, heading[:80]) if x)
    st.markdown(
        f'<div class="slm-src" id="{anchor}"><span class="slm-n">[{rec["n"]}]</span>'
        f'<span class="slm-name">{html.escape(rec.get("name", ""))}</span>'
        f'<span class="slm-meta">{html.escape(meta)}</span>'
        f'<div class="slm-text">{html.escape(ui.excerpt(rec.get("text", ""), 420))}</div></div>',
        unsafe_allow_html=True,
    )


def render_source_viewer(rec: dict, ingest_settings: IngestSettings) -> None:
    ctx = source_context(rec.get("source", ""), _mtime(rec.get("source", "")), rec.get("page"),
                         int(rec.get("start") or 0), int(rec.get("end") or 0), rec.get("text", ""),
                         ingest_settings.redact_pii, ingest_settings.max_pages, ingest_settings.parse_timeout_s)
    where = f"{ctx.name}, page {ctx.page}" if ctx.page else ctx.name
    st.caption(f"{where} · the cited passage is highlighted")
    if ctx.image:
        st.image(ctx.image, caption=f"Page {ctx.page} of {ctx.name}", width="stretch")
    if ctx.note:
        st.caption(ctx.note)
    if ctx.found:
        st.markdown(ctx.html(), unsafe_allow_html=True)
    else:
        st.markdown(ui.highlight_html("", ctx.match, ""), unsafe_allow_html=True)


def render_filter(ans: dict) -> None:
    passages = ans.get("passages") or []
    if not passages:
        return
    used = sum(1 for p in passages if p.get("used"))
    dropped = sum(1 for p in passages if not p.get("kept"))
    f = ans.get("filter") or {}
    rule = ""
    if f.get("kind") and f["kind"] != "none" and f.get("threshold") is not None:
        rule = f" · {f['kind']} filter, threshold {ui.threshold_text(f['threshold'])}"
    label = f"Noise filter: {len(passages)} retrieved · {used} used · {dropped} dropped{rule}"
    with st.expander(label, icon=":material/filter_alt:"):
        rows = []
        for p in passages:
            status = ui.passage_status(p)
            cls = {"used": "slm-used", "dropped": "slm-dropped"}.get(status, "slm-kept")
            fs = ui.filter_score_text(p)
            rows.append(
                f"<tr><td>{p.get('rank', '')}</td><td><b>{html.escape(ui.source_label(p))}</b><br>"
                f"<span class='slm-small'>{html.escape(ui.excerpt(p.get('text', ''), 160))}</span></td>"
                f"<td>{p.get('score', 0):.4f}</td><td>{fs}</td>"
                f"<td><span class='slm-tag {cls}'>{status}</span></td></tr>")
        st.markdown(
            "<table class='slm-filter'><tr><th>#</th><th>Passage</th><th>Retrieval</th><th>Filter score</th>"
            "<th>Result</th></tr>" + "".join(rows) + "</table>", unsafe_allow_html=True)
        st.caption("Retrieval: fused BM25 + dense rank score. Passages scoring below the threshold are dropped "
                   "before the model sees them; kept passages beyond the context budget are not used. A trained "
                   "filter leaves a passage whose cosine is sure either way to that cosine.")


ABSTAIN_REASONS = {
    "filter": "None of the retrieved passages passed the relevance filter, so the assistant does not answer. "
              "The nearest sources are listed below; try rephrasing, lowering the filter threshold in "
              "Settings, or adding a document that covers this.",
    "off_topic": "The question does not look like one about this pack's subject, so no passage was kept and the "
                 "assistant does not answer. If it is about your documents, ask it in their words; otherwise choose "
                 "the domain pack for its subject in the sidebar.",
    "gated": "None of the passages found is close enough to the question to answer from, so the assistant does "
             "not answer. The nearest sources are listed below; ask in the words your documents use (name the "
             "contract, party or document), or add a document that covers this.",
    "unsupported": "An answer was written, but the passages it cited do not support it, so it is not shown. "
                   "The passages that were considered are listed below.",
    "model": "The passages that were found do not answer this question. They are listed below.",
    "unnamed": "The passages that were found come from several documents, and the question does not say which "
               "one it is about. Name the company or party in the question, or choose one under Settings, 'Ask about'.",
    "other_document": "The answer that was found comes from a document the question does not name, so it is not "
                      "shown. Choose the document under Settings, 'Ask about', or ask in its words.",
}


def render_answer_body(ans: dict, prefix: str) -> None:
    if ans.get("abstained"):
        st.markdown(f"<div class='slm-abstain'><b>Not found in your documents.</b> {ABSTAIN_REASONS[ui.abstain_reason(ans)]}</div>",
                    unsafe_allow_html=True)
        return
    if ans.get("shape") == "label" and ans.get("label"):
        st.markdown(f"<span class='slm-label-answer'>{html.escape(ans['label'].capitalize())}</span>",
                    unsafe_allow_html=True)  # the label first: what a reader scans for
    if ans.get("grounded") is False:
        st.warning(ui.check_note(ans), icon=":material/warning:")
    valid = [c["n"] for c in ans.get("citations", [])]
    st.markdown(ui.linkify_citations(ui.markdown_text(ans.get("answer", "")), prefix, valid)
                or "_(empty answer)_")
    calc = (ans.get("details") or {}).get("calculation") or {}
    if "value" in calc:
        st.caption(f"Computed by slmrag from the formula: {calc['formula']} = {calc['display']}")
    note = ui.check_note(ans)
    if note and ans.get("grounded") is not False:
        st.caption(note)


def render_answer_details(ans: dict, prefix: str, ingest_settings: IngestSettings) -> None:
    cites = ans.get("citations") or []
    if cites:
        label = "Nearest sources (not used for an answer)" if ans.get("abstained") else "Sources"
        st.markdown(f"<div class='slm-label'>{label}</div>", unsafe_allow_html=True)
        for rec in cites:
            render_source_card(rec, ui.anchor_id(prefix, rec["n"]))
            with st.expander(f"Show [{rec['n']}] in context", icon=":material/article:"):
                render_source_viewer(rec, ingest_settings)
    render_filter(ans)
    small = ui.format_timings(ans.get("timings"))
    if small:
        st.caption(small)
    if ans.get("disclaimer"):
        st.caption(ans["disclaimer"])


def render_turn(turn: dict, pack: str, ingest_settings: IngestSettings) -> None:
    with st.chat_message("user"):
        st.markdown(ui.markdown_text(turn["question"]))
    with st.chat_message("assistant"):
        prefix = f"{pack}-{turn['id']}"
        if turn.get("error"):
            st.error(turn["error"])
            return
        ans = turn.get("answer")
        if ans:
            render_answer_body(ans, prefix)
            render_answer_details(ans, prefix, ingest_settings)


# ------------------------------------------------------------------------------------------ actions
def ask(assistant: Assistant, pack: str, question: str, options: AskOptions, ingest_settings: IngestSettings) -> None:
    ss = state()
    ss["turn_seq"] += 1
    turn = {"id": ss["turn_seq"], "question": question, "answer": None, "error": None}
    prefix = f"{pack}-{turn['id']}"
    with st.chat_message("user"):
        st.markdown(ui.markdown_text(question))
    with st.chat_message("assistant"):
        try:
            waiting = st.empty()

            def show_place(ahead: int) -> None:  # runs in this session's thread while it waits its turn
                if ahead:
                    waiting.info(ahead_message(ahead), icon=":material/hourglass_top:")
                else:
                    waiting.empty()

            with st.spinner("Searching your documents…"):
                stream = assistant.ask(question, options, on_position=show_place)
            body = st.empty()
            with st.spinner("Writing the answer and checking it against the sources…"):
                stream.run()  # the answer is shown only once it has passed the grounding check
            waiting.empty()
            ans = ui.answer_record(stream.answer)
            turn["answer"] = ans
            with body.container():
                render_answer_body(ans, prefix)
            render_answer_details(ans, prefix, ingest_settings)
        except SlmragError as exc:
            turn["error"] = str(exc)
            st.error(turn["error"])
        except Exception as exc:  # never a traceback in the page; the log has it
            log.exception("answering failed")
            turn["error"] = f"Something went wrong while answering ({ui.short_error(exc, 200)}). " \
                            "Try again; if it keeps happening, check the server log."
            st.error(turn["error"])
    history_of(pack).append(turn)


class _BarProgress:
    """Adapts ingest progress callbacks to an st.progress bar."""

    def __init__(self, bar, total: int, offset: int = 0):
        self.bar, self.total, self.done = bar, max(1, total), offset

    def start(self, total_files: int) -> None: ...

    def file(self, name: str) -> None:
        self.bar.progress(min(1.0, self.done / self.total), text=f"Indexing {name} ({self.done + 1}/{self.total})")

    def chunks(self, n: int) -> None: ...

    def advance(self) -> None:
        self.done += 1
        self.bar.progress(min(1.0, self.done / self.total), text=f"Indexed {self.done}/{self.total}")

    def finish(self) -> None:
        self.bar.progress(1.0, text="Done")


def add_uploads(assistant: Assistant, files: list) -> list[dict]:
    """Save uploads (sanitised, size-limited) under <index>/uploads/ and ingest them; per-file results."""
    from ingest.ingestor import Ingestor

    pack = assistant.pack
    folder = ui.uploads_dir(pack)
    max_bytes = int(ui.upload_limit_mb(pack) * 1024 * 1024)
    bar = st.progress(0.0, text=f"Saving {len(files)} file(s)…")
    saved: dict[str, Path] = {}
    refused: list[dict] = []
    for f in files:
        try:
            path = ui.save_upload(folder, f.name, f.getvalue(), max_bytes)
            saved[f.name] = path
        except SlmragError as exc:
            refused.append({"name": f.name, "error": str(exc)})
        except OSError as exc:
            refused.append({"name": f.name, "error": f"'{f.name}': could not be saved ({exc.strerror or exc})."})
    summary = None
    if saved:
        ingestor = Ingestor(pack, embedder=assistant.embedder)
        # In a low-priority thread that pauses while answers are being written: other sessions keep
        # getting answers during the upload (app/pacing.py).
        summary = ingest_in_background(lambda sink: ingestor.ingest(list(saved.values()), progress=sink),
                                       _BarProgress(bar, len(saved)), assistant.queue)
        assistant.refresh()
    bar.empty()
    return ui.upload_results(saved, refused, summary)


def remove_document(assistant: Assistant, doc) -> str:
    from ingest.ingestor import Ingestor

    Ingestor(assistant.pack, embedder=assistant.embedder).remove([doc.path])
    if ui.is_upload(doc.path, assistant.pack):
        Path(doc.path).unlink(missing_ok=True)
    assistant.refresh()
    return f"Removed {doc.name} from the index."


# ------------------------------------------------------------------------------------------ sidebar
def sidebar_pack_picker(packs: list[str]) -> str:
    ss = state()
    titles = pack_titles(tuple(packs))
    if "pack" not in ss or ss["pack"] not in packs:
        default = os.environ.get("SLMRAG_DEFAULT_PACK", "medical")
        ss["pack"] = default if default in packs else packs[0]
    st.markdown("<div class='slm-brand'>slmrag<span>private document assistant</span></div>",
                unsafe_allow_html=True)
    return st.selectbox("Domain pack", packs, key="pack", format_func=lambda n: titles.get(n, n),
                        help="Each pack has its own documents, prompts and chat history.")


def sidebar_pack_info(assistant: Assistant) -> None:
    pack = assistant.pack
    status = ui.index_status(assistant.snapshot)
    st.markdown(
        f"<div class='slm-stats'><div><b>{status['documents']}</b><span>documents</span></div>"
        f"<div><b>{status['chunks']}</b><span>chunks</span></div></div>"
        f"<div class='slm-small'>Last ingest: {ui.format_when(status['last_ingest'])}</div>",
        unsafe_allow_html=True)
    examples = pack.config.examples
    if examples:
        with st.expander("Example questions", icon=":material/lightbulb:"):
            for i, q in enumerate(examples):
                st.button(q, key=f"ex-side::{pack.name}::{i}", on_click=queue_question, args=(pack.name, q),
                          type="tertiary", width="stretch")


def indexed_documents(assistant: Assistant) -> list:
    """The documents of the pack's index, by name (none before the first ingest)."""
    return sorted(assistant.snapshot.documents.values(), key=lambda d: d.name.lower()) if assistant.snapshot else []


def sidebar_settings(assistant: Assistant) -> AskOptions:
    pack = assistant.pack
    cfg = pack.config
    lo = min(0.0, float(cfg.filter.threshold))
    hi = max(1.0, float(cfg.filter.threshold))
    if cfg.filter.kind != "none":
        threshold_help = (f"Passages whose {cfg.filter.kind} score is below this are dropped; higher means stricter "
                          "(more abstentions).")
    else:
        threshold_help = "This pack drops no passage (filter.kind none)" + (
            ": its question gate decides whether a question is answered at all." if cfg.filter.gate is not None else ".")
    with st.expander("Settings", icon=":material/tune:"):
        k = st.slider("Passages retrieved (k)", 1, 20, min(20, cfg.retrieval.k), key=f"k::{pack.name}",
                      persist_state="session", help="How many passages are retrieved before the noise filter.")
        step = ui.threshold_step(cfg.filter.threshold)
        threshold = st.slider("Filter threshold", lo, hi, float(cfg.filter.threshold), step=step,
                              format=ui.threshold_format(cfg.filter.threshold),
                              key=f"threshold::{pack.name}", persist_state="session",
                              help=threshold_help,
                              disabled=cfg.filter.kind == "none")
        max_tokens = st.slider("Answer length (max tokens)", 16, 1024, min(1024, cfg.generator.max_tokens),
                               step=8, key=f"max_tokens::{pack.name}", persist_state="session",
                               help="Most tokens generated per answer.")
        docs = indexed_documents(assistant)
        by_id = {d.doc_id: d.name for d in docs}
        scope = st.selectbox("Ask about", [None, *by_id], key=f"scope::{pack.name}",
                             format_func=lambda i: "All documents" if i is None else by_id.get(i, i),
                             help="Answer from one document only: for questions such as 'What was revenue in "
                                  "2019?' that many documents answer differently.")
        st.caption(f"Pack defaults: k={cfg.retrieval.k}, threshold={cfg.filter.threshold:g}, "
                   f"max tokens={cfg.generator.max_tokens}. Settings apply to this session only.")
    return AskOptions(k=int(k), threshold=float(threshold), max_tokens=int(max_tokens),
                      doc=scope if scope in by_id else None)


def sidebar_documents(assistant: Assistant) -> None:
    ss = state()
    pack = assistant.pack
    limit = ui.upload_limit_mb(pack)
    with st.expander("Documents", icon=":material/folder_open:"):
        files = st.file_uploader(
            "Add documents to this pack", type=ui.UPLOAD_TYPES, accept_multiple_files=True,
            key=f"uploader::{pack.name}::{ss['uploader_nonce']}", max_upload_size=max(1, int(limit)),
            help=f"PDF, text, Markdown or HTML; up to {limit:g} MB each. Files are stored in this pack's "
                 "index folder and indexed right away.")
        if files and st.button(f"Add {len(files)} file(s) to the index", type="primary", key=f"add::{pack.name}",
                               width="stretch"):
            results = add_uploads(assistant, files)
            ss["upload_results"][pack.name] = results
            ss["uploader_nonce"] += 1
            st.rerun()
        for r in ss["upload_results"].get(pack.name, []):
            cls = {"added": "slm-used", "updated": "slm-used", "skipped": "slm-kept"}.get(r["status"], "slm-dropped")
            detail = f" · {html.escape(r['detail'])}" if r.get("detail") else ""
            st.markdown(f"<div class='slm-result'><span class='slm-tag {cls}'>{r['status']}</span>"
                        f"<b>{html.escape(r['name'])}</b>{detail}</div>", unsafe_allow_html=True)

        docs = indexed_documents(assistant)
        if docs:
            st.markdown("<div class='slm-label'>In the index</div><div class='slm-doclist'>" + "".join(
                f"<div>{html.escape(d.name)} <span class='slm-small'>· {d.n_chunks} chunks"
                f"{' · uploaded' if ui.is_upload(d.path, pack) else ''}</span></div>" for d in docs) + "</div>",
                unsafe_allow_html=True)
            by_id = {d.doc_id: d for d in docs}
            choice = st.selectbox("Remove a document", list(by_id), index=None, key=f"remove::{pack.name}",
                                  format_func=lambda i: by_id[i].name, placeholder="Choose a document…")
            if st.button("Remove from index", key=f"remove-btn::{pack.name}", disabled=choice is None,
                         width="stretch"):
                ss["doc_messages"][pack.name] = remove_document(assistant, by_id[choice])
                st.rerun()
        msg = ss["doc_messages"].get(pack.name)
        if msg:
            st.caption(msg)


def sidebar_conversation(pack) -> None:
    turns = history_of(pack.name)
    st.markdown("<div class='slm-label'>Conversation</div>", unsafe_allow_html=True)
    c1, c2 = st.columns(2)
    c1.button("Clear chat", key=f"clear::{pack.name}", on_click=clear_history, args=(pack.name,),
              disabled=not turns, icon=":material/delete_sweep:", width="stretch")
    c2.download_button(
        "Export", data=ui.conversation_markdown(turns, title=pack.config.title, pack=pack.name,
                                                disclaimer=pack.disclaimer),
        file_name=ui.export_file_name(pack.name), mime="text/markdown", on_click="ignore",
        key=f"export::{pack.name}", disabled=not turns, icon=":material/download:", width="stretch",
        help="Download this pack's conversation as Markdown, with its citations.")


# ------------------------------------------------------------------------------------------ page
def main() -> None:
    st.markdown(CSS, unsafe_allow_html=True)
    packs = list_packs()
    if not packs:
        st.error("No domain packs found. Create one with `slmrag packs new NAME --from medical`.")
        return
    with st.sidebar:
        pack_name = sidebar_pack_picker(packs)
    try:
        assistant = get_assistant(pack_name, str(index_root()))
        assistant.refresh()  # cheap; picks up ingests done elsewhere (CLI, another session)
    except SlmragError as exc:
        st.error(f"Pack '{pack_name}' could not be loaded: {exc}")
        return
    pack = assistant.pack
    cfg = pack.config
    with st.sidebar:
        sidebar_pack_info(assistant)
        options = sidebar_settings(assistant)
        sidebar_documents(assistant)
        conversation_slot = st.container()  # filled last, so it reflects a question asked in this run

    st.title(cfg.title)
    if cfg.description:
        st.markdown(f"<div class='slm-sub'>{html.escape(cfg.description)}</div>", unsafe_allow_html=True)
    if pack.disclaimer:
        st.markdown(f"<div class='slm-disclaimer'>{html.escape(pack.disclaimer)}</div>", unsafe_allow_html=True)

    # chat_input is pinned to the bottom of the page wherever it is called; read it first so a question
    # asked in this run hides the starter suggestions.
    question = st.chat_input(f"Ask the {cfg.title} a question", key="question", max_chars=2000)
    pending = state().pop("pending", None)
    if not question and pending and pending.get("pack") == pack.name:
        question = pending["question"]
    turns = history_of(pack.name)
    if not turns and not question:
        if cfg.examples:
            st.markdown("<div class='slm-label'>Try a question</div>", unsafe_allow_html=True)
            cols = st.columns(min(2, len(cfg.examples)))
            for i, q in enumerate(cfg.examples):
                cols[i % len(cols)].button(q, key=f"ex-main::{pack.name}::{i}", on_click=queue_question, wrap=True,
                                           args=(pack.name, q), width="stretch")
        else:
            st.caption("Ask a question about this pack's documents below. Answers cite their sources as [n].")
    for turn in turns:
        render_turn(turn, pack.name, cfg.ingest)
    if question:
        ask(assistant, pack.name, question, options, cfg.ingest)
    with conversation_slot:
        sidebar_conversation(pack)


try:
    main()
except SlmragError as exc:
    st.error(str(exc))
except Exception as exc:  # the page shows a short message, never a traceback; the log keeps the details
    log.exception("slmrag UI error")
    st.error(f"Something went wrong: {ui.short_error(exc, 200)}. Reload the page; if it keeps happening, "
             "check the server log.")
