"""Testable, Streamlit-free logic behind the chat UI (``app/ui/streamlit_app.py``).

Everything here is plain Python so it can be unit-tested without a browser: turning an
:class:`~app.answer.Answer` into a record the UI keeps in the session, linking citations ``[n]`` to
their sources, exporting a conversation as Markdown, sanitising and saving uploads, finding a passage
in its document for the source viewer (text with the passage highlighted; a PDF page as an image when
``pypdfium2`` is installed), and formatting timings and index status.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from app.answer import abstain_reason as answer_abstain_reason
from app.errors import InputError

# Same set the ingest loaders read (kept literal so this module never imports the ingest stack).
UPLOAD_SUFFIXES = (".pdf", ".txt", ".text", ".md", ".markdown", ".html", ".htm")
UPLOAD_TYPES = [s.lstrip(".") for s in UPLOAD_SUFFIXES]
DEFAULT_UPLOAD_MAX_MB = 50.0
MAX_NAME_CHARS = 120
_CITE = re.compile(r"\[(\d{1,2})\]")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


# ---------------------------------------------------------------------------------------------- answers
def passage_record(p, n: int | None = None) -> dict:
    """A JSON-able view of a :class:`~app.retrieval.Passage` that keeps what the source viewer needs."""
    rec = {
        "rank": p.rank,
        "source": p.source,
        "name": p.name,
        "page": p.page,
        "heading": p.heading,
        "text": p.text,
        "start": p.start,
        "end": p.end,
        "doc_id": p.doc_id,
        "vid": int(p.vid),
        "score": None if p.score is None else round(float(p.score), 5),
        "filter_score": None if p.filter_score is None else round(float(p.filter_score), 5),
        "kept": bool(p.kept),
        **p.filter_details(),
    }
    if n is not None:
        rec["n"] = n
    return rec


def answer_record(answer) -> dict:
    """What the UI stores for one answer: the answer text, cited passages (with their spans), every
    retrieved passage with its filter score and fate, abstention, disclaimer and timings."""
    context_vids = {int(p.vid) for p in answer.context}
    passages = []
    for p in answer.passages:
        rec = passage_record(p)
        rec["used"] = int(p.vid) in context_vids
        passages.append(rec)
    if answer.abstained:
        # The abstain message numbers its nearest sources 1..3: keep that numbering.
        by_text = {p.text: p for p in answer.passages}
        citations = [passage_record(by_text[c["text"]], c["n"]) for c in answer.nearest if c["text"] in by_text]
    else:
        citations = [passage_record(answer.context[c["n"] - 1], c["n"]) for c in answer.citations
                     if 1 <= c["n"] <= len(answer.context)]
    return {
        "question": answer.question,
        "answer": answer.answer,
        "abstained": bool(answer.abstained),
        "citations": citations,
        "passages": passages,
        "disclaimer": answer.disclaimer,
        "timings": dict(answer.timings),
        "filter": dict(answer.filter),  # the kind and threshold this answer was filtered with
        # the answer's shape and the check that decided whether it is shown (app/answers/compose.py)
        "shape": answer.shape, "label": answer.label, "grounded": answer.grounded, "support": answer.support,
        "decided_by": answer.decided_by, "withheld": answer.withheld, "details": dict(answer.details),
        "abstain_reason": answer.reason,
    }


def abstain_reason(rec: dict) -> str:
    """Why an abstaining answer gave none (:func:`app.answer.abstain_reason`): the reason the answer carries,
    or, for an answer stored before answers carried it, the same rule applied to its stored fields."""
    if rec.get("abstain_reason"):
        return rec["abstain_reason"]
    filtering = rec.get("filter") or {}
    return answer_abstain_reason(decided_by=rec.get("decided_by") or "", withheld=bool(rec.get("withheld")),
                                 off_topic=bool(filtering.get("off_topic")), gated=bool(filtering.get("gated")))


def check_note(rec: dict) -> str:
    """One line saying which check decided about the answer, for the UI under the answer."""
    support = rec.get("support") or {}
    score = f" (support {support['score']:.2f})" if support.get("score") is not None else ""
    if rec.get("decided_by") == "document":
        if abstain_reason(rec) == "other_document":
            return "The answer came from a document the question does not name (this pack's name_the_document check)."
        return "The passages come from several documents and the question names none of them (this pack's name_the_document check)."
    if rec.get("withheld"):
        return f"An answer was written but not shown: it was not supported by the passages it cited{score}."
    details = rec.get("details") or {}
    verdict = (details.get("label_scores") or {}).get("verdict")
    how_sure = f" (verdict {verdict:.2f})" if verdict is not None else ""
    if rec.get("decided_by") == "model":
        if details.get("label_by") == "reader":
            return ("This pack's trained label reader found no verdict on the question in the passages of the "
                    "documents it names" + how_sure + ".")
        return "The model found that the passages do not answer the question."
    if rec.get("grounded") is False:
        missing = ", ".join(support.get("missing", [])[:5])
        return f"Not supported by the cited passages{score}" + (f"; not found there: {missing}" if missing else "") + "."
    if (details.get("quote") or {}).get("no_verdict") and rec.get("grounded"):
        chooser = (" this pack's trained sentence selector chose" if details["quote"].get("by") == "selector"
                   else " slmrag chose")
        return ("This pack's trained label reader found no yes/no verdict in the passages" + how_sure + ", so there "
                "is no label;" + chooser + " the sentence that bears on the question from a document naming most "
                "of its words, quoted word for word. Read it before you act on it.")
    if details.get("label_by") == "reader" and rec.get("grounded"):
        chooser = (", chosen by its trained sentence selector," if (details.get("quote") or {}).get("by") == "selector"
                   else "")
        return ("The label was read from the cited passage by this pack's trained label reader" + how_sure +
                f"; the sentence that states it{chooser} is quoted word for word.")
    if rec.get("decided_by") == "verbatim":
        quote = details.get("quote") or {}
        if quote.get("by") == "dates":
            return {"computed": "The end date is counted by slmrag: the start date the contract states plus the term "
                                "its quoted sentence gives (both cited; check the contract's own counting convention).",
                    "stated": "The end date is the one the contract's quoted term sentence names, word for word.",
                    }.get(quote.get("term"), "The contract's quoted term sentence gives no end date: the term runs "
                                             "until it is terminated.")
        if quote.get("by") == "selector":
            if quote.get("sentence"):
                return ("This pack's trained sentence selector chose the cited passage's sentence that answers and "
                        "marked the answer in it; both are quoted word for word.")
            return "This pack's trained sentence selector chose the cited passage's sentence that answers; it is quoted word for word."
        if quote.get("by_model") is False:
            return ("The model's own answer did not hold up against the sources, so the cited passage's best "
                    "matching sentence is shown instead, word for word.")
        return "Quoted word for word from the cited passage."
    lookup = details.get("lookup")
    if lookup and rec.get("decided_by") == "lexical":
        under = f" under \u201c{lookup['section']}\u201d" if lookup.get("section") else ""
        return (f"Read off the table in [{lookup['n']}] by slmrag, not generated: the row \u201c{lookup['row']}\u201d"
                f"{under}, the column for {lookup['year']}. Check the row and the column in the source.")
    if rec.get("decided_by") == "lexical":
        return f"Checked against the cited passages{score}."
    return ""


def anchor_id(prefix: str, n: int) -> str:
    """An HTML id for citation ``n`` of one answer (letters, digits and '-' only)."""
    safe = re.sub(r"[^A-Za-z0-9-]+", "-", prefix).strip("-") or "a"
    return f"src-{safe}-{n}"


def linkify_citations(text: str, prefix: str, valid: set[int] | list[int] | None = None) -> str:
    """Turn ``[n]`` markers into Markdown links to the anchor of source ``n`` (only numbers in ``valid``)."""
    allowed = None if valid is None else {int(v) for v in valid}

    def repl(m: re.Match) -> str:
        n = int(m.group(1))
        if allowed is not None and n not in allowed:
            return m.group(0)
        return f"[\\[{n}\\]](#{anchor_id(prefix, n)})"

    return _CITE.sub(repl, text)


def markdown_text(text: str) -> str:
    """Plain model or user text made safe for st.markdown: '$' would start LaTeX math (amounts in
    financial answers), so it is escaped; other Markdown the model writes (lists, bold) is kept."""
    return re.sub(r"(?<!\\)\$", r"\\$", text or "")


def source_label(rec: dict) -> str:
    page = f", page {rec['page']}" if rec.get("page") else ""
    return f"{rec.get('name', '?')}{page}"


def excerpt(text: str, limit: int = 320) -> str:
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def filter_score_text(rec: dict) -> str:
    """A passage's score in the noise-filter table: the filter's (with the model's own when
    ``filter.relative_to_best`` or ``filter.rank_prior`` read it in its question), or the cosine that decided it for
    a trained filter (``filter.cosine_keep`` / ``cosine_floor``: the model did not score it)."""
    if rec.get("filter_score") is not None:
        if rec.get("model_score") is not None:
            return f"{rec['filter_score']:.3f} (model {rec['model_score']:.3f}, read in its question)"
        return f"{rec['filter_score']:.3f}"
    if rec.get("cosine") is not None:
        return f"cosine {rec['cosine']:.3f}, {'kept' if rec.get('kept_by') else 'dropped'} on it"
    return "–"


def threshold_step(threshold: float) -> float:
    """The filter-threshold slider's step: 0.01, or 0.0001 for a pack whose calibrated threshold is under 0.05 (a
    trained model whose scores are small probabilities - finance's 0.0066 - would have only 0 and 0.01 to choose
    from around it)."""
    return 0.0001 if abs(float(threshold)) < 0.05 else 0.01


def threshold_format(threshold: float) -> str:
    """The printf format of a threshold in the UI (its slider and the answer's caption): the digits its slider
    step can set."""
    return "%.4f" if threshold_step(threshold) < 0.01 else "%.2f"


def threshold_text(threshold: float) -> str:
    """A threshold as the UI prints it (0.37, 0.0066)."""
    return threshold_format(threshold) % float(threshold)


def passage_status(rec: dict) -> str:
    if rec.get("used"):
        return "used"
    if rec.get("kept"):
        return "kept, over token budget"
    return "dropped"


def format_timings(t: dict | None) -> str:
    """Small-print line: retrieve / filter / first token / total (and model load on a cold start)."""
    if not t:
        return ""

    def s(key: str) -> str:
        v = t.get(key)
        return "–" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s")

    parts = [f"retrieve {s('retrieve_s')}", f"filter {s('filter_s')}", f"first token {s('first_token_s')}",
             f"total {s('total_s')}"]
    if t.get("tokens"):
        rate = f", {t['tokens_per_s']:.1f} tok/s" if t.get("tokens_per_s") else ""
        parts.append(f"{t['tokens']} tokens{rate}")
    if (t.get("load_s") or 0) >= 0.5:
        parts.insert(0, f"model load {s('load_s')}")
    if (t.get("queue_s") or 0) >= 0.5:  # waited for other questions' answers (first token and total include it)
        ahead = t.get("queue_ahead") or 0
        parts.insert(0, f"waited {s('queue_s')} for the model ({ahead} question{'s' if ahead != 1 else ''} ahead)")
    return " · ".join(parts)


def format_when(ts: float | None, now: float | None = None) -> str:
    """'2025-01-31 14:05 UTC (3 min ago)' for a Unix time; 'never' for None."""
    if not ts:
        return "never"
    now = time.time() if now is None else now
    stamp = datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ago = max(0.0, now - ts)
    if ago < 60:
        rel = "just now"
    elif ago < 3600:
        rel = f"{int(ago // 60)} min ago"
    elif ago < 86400:
        rel = f"{int(ago // 3600)} h ago"
    else:
        rel = f"{int(ago // 86400)} d ago"
    return f"{stamp} ({rel})"


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One readable line for an unexpected exception (never a traceback)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if len(msg) > limit:
        msg = msg[: limit - 1] + "…"
    return f"{type(exc).__name__}: {msg}" if not isinstance(exc, InputError) else msg


# ---------------------------------------------------------------------------------------------- export
def conversation_markdown(turns: list[dict], *, title: str, pack: str, disclaimer: str = "",
                          now: float | None = None) -> str:
    """The conversation of one pack as Markdown: each question, its answer and its numbered sources
    (file, page, quoted passage), abstentions and errors stated plainly."""
    now = time.time() if now is None else now
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}: conversation", "", f"Exported {stamp} from slmrag, pack `{pack}`.", ""]
    if disclaimer:
        out += ["> " + line for line in disclaimer.strip().splitlines()] + [""]
    if not turns:
        out += ["_No questions asked yet._", ""]
    for i, turn in enumerate(turns, 1):
        out += [f"## Q{i}. {turn.get('question', '').strip()}", ""]
        ans = turn.get("answer")
        if turn.get("error"):
            out += [f"**Error:** {turn['error']}", ""]
            continue
        if not ans:
            continue
        if ans.get("abstained"):
            out += ["**Not found in your documents.** The assistant abstained: no retrieved passage passed "
                    "the relevance filter.", ""]
            if ans.get("answer"):
                out += [ans["answer"].strip(), ""]
            heading = "Nearest sources (not used for an answer)"
        else:
            out += [ans.get("answer", "").strip() or "_(empty answer)_", ""]
            heading = "Sources"
        cites = ans.get("citations") or []
        if cites:
            out += [f"**{heading}**", ""]
            for c in cites:
                quote = excerpt(c.get("text", ""), 600).replace("\n", " ")
                out.append(f"{c['n']}. **[{c['n']}] {source_label(c)}**: \"{quote}\"")
            out.append("")
        timing = format_timings(ans.get("timings"))
        if timing:
            out += [f"<sub>{timing}</sub>", ""]
    return "\n".join(out).rstrip() + "\n"


def export_file_name(pack: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    return f"slmrag-{pack}-{datetime.fromtimestamp(now, tz=timezone.utc).strftime('%Y%m%d-%H%M')}.md"


# ---------------------------------------------------------------------------------------------- uploads
def uploads_dir(pack) -> Path:
    """Where uploaded files of a pack are kept: ``<pack index dir>/uploads/``."""
    return Path(pack.index_dir) / "uploads"


def upload_limit_mb(pack) -> float:
    """The per-file upload limit: the pack's ingest.max_file_mb, capped by SLMRAG_UI_MAX_UPLOAD_MB."""
    try:
        cap = float(os.environ.get("SLMRAG_UI_MAX_UPLOAD_MB", DEFAULT_UPLOAD_MAX_MB))
    except ValueError:
        cap = DEFAULT_UPLOAD_MAX_MB
    return max(0.001, min(float(pack.config.ingest.max_file_mb), cap))


def sanitize_upload_name(name: str) -> str:
    """A safe file name for an uploaded file, or :class:`InputError` saying why it is refused.

    Any directory part (``../``, ``/abs/``, ``C:\\``) is dropped, so the name can never leave the
    uploads folder; hidden names (leading dot) and unsupported types are refused; odd characters become
    ``_`` and the name is shortened to a sane length with its suffix kept.
    """
    raw = unicodedata.normalize("NFKC", str(name or ""))
    raw = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C")  # no NUL, newlines, controls
    base = re.split(r"[\\/]", raw.strip())[-1].strip()
    base = re.sub(r"^[A-Za-z]:", "", base)  # "C:evil.txt"
    if not base or base in {".", ".."}:
        raise InputError(f"'{name}': not a usable file name; rename the file and upload it again.")
    if base.startswith("."):
        raise InputError(f"'{name}': hidden files (names starting with '.') are not accepted; rename the file.")
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem:
        raise InputError(f"'{name}': the file has no type; upload a .pdf, .txt, .md or .html file.")
    suffix = "." + suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise InputError(f"'{name}': unsupported file type '{suffix}'; upload a .pdf, .txt, .md or .html file.")
    stem = re.sub(r"[^\w\-. ()+,]+", "_", stem, flags=re.UNICODE)
    stem = re.sub(r"\s+", " ", stem).strip(" .")
    stem = re.sub(r"\.{2,}", ".", stem)
    if not stem or stem.lower() in _WINDOWS_RESERVED:
        stem = f"upload_{stem or 'file'}"
    stem = stem[: MAX_NAME_CHARS - len(suffix)].rstrip(" .")
    return stem + suffix


def save_upload(folder: Path, name: str, data: bytes, max_bytes: int) -> Path:
    """Write an uploaded file into ``folder`` under its sanitised name, atomically; returns the path.

    Raises :class:`InputError` for a refused name, an empty file or one over ``max_bytes``.
    """
    safe = sanitize_upload_name(name)
    if not data:
        raise InputError(f"'{safe}': the file is empty (0 bytes); nothing to add.")
    if len(data) > max_bytes:
        raise InputError(f"'{safe}': {len(data) / 1e6:.1f} MB is over the upload limit of "
                         f"{max_bytes / 1e6:.1f} MB; split the file or ingest it with `slmrag ingest`.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    target = (root / safe).resolve()
    if target.parent != root or target.is_symlink():  # defence in depth: never outside the uploads folder
        raise InputError(f"'{name}': refused, the name would leave the uploads folder.")
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=root)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def upload_results(saved: dict[str, Path], refused: list[dict], summary) -> list[dict]:
    """Per-file outcome of an upload: ``{name, status: added|updated|skipped|failed, detail}``.

    ``saved`` maps each uploaded name to the path it was saved at; ``refused`` holds ``{name, error}``
    for files refused before ingest; ``summary`` is the :class:`~ingest.ingestor.IngestSummary`.
    """
    by_path: dict[str, tuple[str, str]] = {}
    if summary is not None:
        for p in summary.added:
            by_path[str(p)] = ("added", "")
        for p in summary.updated:
            by_path[str(p)] = ("updated", "replaced the earlier version")
        for p in summary.skipped:
            by_path[str(p)] = ("skipped", "already in the index, unchanged")
        for f in summary.failed:
            by_path[str(f.get("path"))] = ("failed", str(f.get("error", "")))
    out = [{"name": r["name"], "status": "failed", "detail": r["error"]} for r in refused]
    for name, path in saved.items():
        status, detail = by_path.get(str(path), by_path.get(str(Path(path).resolve()), ("failed", "not ingested")))
        if status == "failed" and detail:
            detail = detail.replace(str(path), Path(path).name)
        out.append({"name": Path(path).name, "status": status, "detail": detail})
    return out


# ---------------------------------------------------------------------------------------------- source viewer
@dataclass
class SourceContext:
    """A passage located in its document: ``before`` + ``match`` + ``after`` is a window of the page."""

    name: str
    page: int | None
    kind: str
    before: str = ""
    match: str = ""
    after: str = ""
    found: bool = False
    note: str = ""
    image: bytes | None = None  # PNG of the PDF page, when pypdfium2 is installed
    extra: dict = field(default_factory=dict)

    def html(self) -> str:
        return highlight_html(self.before, self.match, self.after)


def highlight_html(before: str, match: str, after: str) -> str:
    """Escaped HTML of a text window with the passage wrapped in ``<mark>``.

    Newlines become ``<br>`` so the block has no blank line: Markdown renderers would otherwise end the
    HTML block there and format the rest of the document text (lists, headings) as Markdown.
    """
    def esc(text: str) -> str:
        text = re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n"))
        return html.escape(text).replace("\n", "<br>")

    lead = "… " if before and not before.startswith("\n") else ""
    return (f'<div class="slm-context">{esc(lead + before)}<mark class="slm-hl">{esc(match)}</mark>'
            f'{esc(after)}{" …" if after else ""}</div>')


def _window(text: str, start: int, end: int, before: int, after: int) -> tuple[str, str, str]:
    lo = max(0, start - before)
    hi = min(len(text), end + after)
    if lo > 0:  # begin at a word boundary
        sp = text.find(" ", lo, start)
        lo = sp + 1 if sp != -1 else lo
    if hi < len(text):
        sp = text.rfind(" ", end, hi)
        hi = sp if sp != -1 else hi
    return text[lo:start], text[start:end], text[end:hi]


def _locate(page_text: str, rec: dict) -> tuple[int, int] | None:
    start, end, passage = rec.get("start"), rec.get("end"), rec.get("text") or ""
    if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(page_text):
        if page_text[start:end] == passage or not passage:
            return start, end
    if passage:
        i = page_text.find(passage)
        if i != -1:
            return i, i + len(passage)
        # Whitespace may differ (e.g. a re-extracted PDF page): match on the first words.
        words = passage.split()
        if len(words) >= 4:
            pattern = r"\s+".join(re.escape(w) for w in words)
            m = re.search(pattern, page_text)
            if m:
                return m.start(), m.end()
    return None


def passage_context(rec: dict, *, redact_pii: bool = False, max_pages: int = 5000, timeout_s: float = 300.0,
                    before: int = 240, after: int = 700, render_pdf: bool = True) -> SourceContext:
    """Find a cited passage in its document and return a window of text around it.

    Text, Markdown and HTML documents are re-read and the stored start/end span is used (the passage
    is searched for when the file changed since it was indexed). For a PDF, the passage's page text
    (as pypdf extracts it) is used, and the page is rendered as a PNG when pypdfium2 is installed.
    The file is parsed the way ingest parses it: in the parser sandbox, within the pack's limits
    (``max_pages``, ``timeout_s`` from its ingest settings), so a hostile file cannot hang or exhaust
    the UI process. When the pack redacts personal identifiers, the context is redacted the same way.
    """
    from ingest.sandbox import load_bounded  # read the file exactly as ingest did when indexing

    path = Path(rec.get("source") or "")
    name = rec.get("name") or path.name
    page_no = rec.get("page")
    ctx = SourceContext(name=name, page=page_no, kind="pdf" if path.suffix.lower() == ".pdf" else "text",
                        match=rec.get("text", ""))
    if not path.is_file():
        ctx.note = f"{name} is no longer on disk; showing the passage as it was indexed."
        return ctx
    try:
        info, pages = load_bounded(path, max_pages=max_pages, timeout_s=timeout_s)
        ctx.kind = info.kind
        try:
            page_text = next((page.text for page in pages if page.page == page_no or page_no is None), None)
        finally:
            getattr(pages, "close", lambda: None)()  # stop reading at the page: ends the parser process
    except Exception as exc:  # a file that became unreadable: show the stored passage instead
        ctx.note = f"{name} could not be re-read ({short_error(exc, 160)}); showing the passage as indexed."
        return ctx
    if page_text is None:
        ctx.note = f"Page {page_no} of {name} was not found; showing the passage as indexed."
        return ctx
    if redact_pii:
        from ingest.redact import redact

        page_text, _ = redact(page_text)
    span = _locate(page_text, rec)
    if span is None:
        ctx.note = f"{name} changed since it was indexed; showing the passage as indexed."
    else:
        ctx.before, ctx.match, ctx.after = _window(page_text, span[0], span[1], before, after)
        ctx.found = True
    if ctx.kind == "pdf" and render_pdf and page_no:
        ctx.image = render_pdf_page(path, page_no)
    return ctx


def pdfium_available() -> bool:
    try:
        import pypdfium2  # noqa: F401
    except Exception:
        return False
    return True


def render_pdf_page(path: Path | str, page: int, width_px: int = 900) -> bytes | None:
    """PNG bytes of one PDF page (1-based) rendered with pypdfium2, or None when it is not installed
    or the page cannot be rendered."""
    try:
        import pypdfium2 as pdfium
    except Exception:
        return None
    try:
        import io

        doc = pdfium.PdfDocument(str(path))
        try:
            if not 1 <= page <= len(doc):
                return None
            pg = doc[page - 1]
            w = pg.get_width() or 612
            bitmap = pg.render(scale=max(0.5, min(4.0, width_px / w)))
            img = bitmap.to_pil()
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return buf.getvalue()
        finally:
            doc.close()
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------- index status
def index_status(snapshot) -> dict:
    """Documents, chunks and last ingest of an index snapshot (None-safe)."""
    if snapshot is None:
        return {"documents": 0, "chunks": 0, "last_ingest": None}
    return {"documents": len(snapshot.documents), "chunks": snapshot.n_chunks,
            "last_ingest": getattr(snapshot, "last_ingest", None)}


def is_upload(doc_path: str, pack) -> bool:
    """True when a document lives in the pack's uploads folder (so removing it may delete the file)."""
    try:
        Path(doc_path).resolve().relative_to(uploads_dir(pack).resolve())
    except ValueError:
        return False
    return True
