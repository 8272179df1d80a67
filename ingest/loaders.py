"""Turn a file into pages of text: PDF (PDFium, page numbers kept), plain text, Markdown and HTML.

Every loader yields :class:`Page` objects one at a time, so a 2,000-page PDF is never held in memory as
a whole, and raises :class:`app.errors.DocumentError` with a one-line, actionable reason on bad input.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from app.errors import DocumentError
from ingest import html_tables

SUPPORTED_SUFFIXES = {".pdf", ".txt", ".md", ".markdown", ".html", ".htm", ".text"}


@dataclass
class Page:
    text: str
    page: int | None  # 1-based for PDFs, None for flowing text


@dataclass
class DocumentInfo:
    title: str
    kind: str  # pdf | text | markdown | html
    pages: int | None = None


def title_from_filename(path: Path) -> str:
    # "ADOBE_2022_10K.pdf" -> "ADOBE 2022 10K": file names often carry the company, year and form.
    return re.sub(r"[_\-]+", " ", path.stem).strip()


# ----------------------------------------------------------------------------------------- text files
def decode_text(data: bytes, path: Path) -> str:
    """Decode bytes that should be text: UTF-8 (with or without BOM), UTF-16/32 with BOM, else cp1252.

    Binary data renamed to .txt is refused rather than indexed as mojibake.
    """
    if not data:
        raise DocumentError(f"{path}: the file is empty (0 bytes); nothing to index.")
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DocumentError(f"{path}: starts with a {encoding} byte-order mark but is not valid {encoding}.") from exc
    sample = data[:65536]
    if b"\x00" in sample or _control_ratio(sample) > 0.10:
        raise DocumentError(
            f"{path}: looks like a binary file, not text (NUL or control bytes); "
            "check the file type or convert it to PDF, text, Markdown or HTML."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Legacy Windows/Latin-1 text is the common case; cp1252 is a superset of printable latin-1.
        return data.decode("cp1252", errors="replace")


def _control_ratio(sample: bytes) -> float:
    if not sample:
        return 0.0
    bad = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return bad / len(sample)


class _HTMLText(HTMLParser):
    """Text of an HTML page: block tags break lines, headings become markdown headings, and tables become
    markdown tables (ingest.html_tables) so a figure keeps its row and its column's header."""

    BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
             "ul", "ol", "pre", "blockquote", "header", "footer", "dt", "dd"}
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._tables: list[dict] = []  # open tables, innermost last: {"rows": [...], "cell": Cell | None}

    def _out(self, text: str) -> None:
        """Text goes into the open table cell, if any, else into the page."""
        if not self._tables:
            self.parts.append(text)
            return
        t = self._tables[-1]
        if t["cell"] is not None:
            t["cell"].text += text
        elif text.strip():  # text between cells (malformed markup): a cell of its own, never lost
            if not t["rows"]:
                t["rows"].append([])
            t["rows"][-1].append(html_tables.Cell(t["col"], t["col"], text))
            t["col"] += 1

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP:
            self._skip += 1
        if tag == "table":  # a table inside a cell is laid out into that cell's text
            self._tables.append({"rows": [], "cell": None, "col": 0})
            return
        if self._tables and tag == "tr":
            t = self._tables[-1]
            self._close_cell(t)
            t["rows"].append([])
            t["col"] = 0
            return
        if self._tables and tag in ("td", "th"):
            t = self._tables[-1]
            self._close_cell(t)
            if not t["rows"]:
                t["rows"].append([])
            try:
                span = max(1, min(int(dict(attrs).get("colspan") or 1), 100))
            except ValueError:
                span = 1
            t["cell"] = html_tables.Cell(t["col"], t["col"] + span - 1, "", span == 1)
            t["col"] += span
            return
        if tag in self.BLOCK:
            self._out(" " if self._in_cell() else "\n" if tag in ("br", "li") else "\n\n")
        if tag in {"h1", "h2", "h3", "h4", "h5", "h6"} and not self._in_cell():
            # Keep headings recognisable for section-aware chunking: render as Markdown headings.
            self._out("#" * int(tag[1]) + " ")

    def _in_cell(self) -> bool:
        return bool(self._tables) and self._tables[-1]["cell"] is not None

    @staticmethod
    def _close_cell(t: dict) -> None:
        if t["cell"] is not None:
            t["rows"][-1].append(t["cell"])
            t["cell"] = None

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag == "table" and self._tables:
            t = self._tables.pop()
            self._close_cell(t)
            if self._tables:  # nested in another table's cell: its cells as running text there
                self._out(" " + "; ".join(" ".join(c.text for c in row) for row in t["rows"]) + " ")
                return
            lines = html_tables.layout(t["rows"])
            self._out("\n\n" + "\n".join(lines) + "\n\n" if lines else "\n")
            return
        if self._tables and tag in ("td", "th", "tr"):
            self._close_cell(self._tables[-1])
            return
        if tag in self.BLOCK:
            self._out("\n" if not self._in_cell() else " ")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
            return
        if not self._skip:
            self._out(data)

    def text(self) -> str:
        while self._tables:  # a table never closed (truncated page): keep what it held
            self.handle_endtag("table")
        raw = "".join(self.parts)
        raw = re.sub(r"[ \t\r\f\v]+", " ", raw)
        raw = re.sub(r" *\n *", "\n", raw)
        return re.sub(r"\n{3,}", "\n\n", raw).strip()


def html_to_text(markup: str) -> tuple[str, str]:
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except AssertionError:
        # Reliability fix (found by tests/test_fuzz.py): the stdlib HTMLParser raises AssertionError on
        # some malformed "<![" marked sections ("<![foo[", "<![ a"). Read such a page with those
        # openers escaped as text instead of losing the whole file.
        parser = _HTMLText()
        parser.feed(markup.replace("<![", "&lt;!["))
        parser.close()
    return parser.text(), parser.title.strip()


# ----------------------------------------------------------------------------------------------- PDF
# PDF text comes from PDFium (pypdfium2, Chrome's PDF engine). On the dev finance filings it extracts a page
# in ~2 ms of CPU where pypdf took ~37 ms, so ingest is no longer bound by parsing, and it keeps words whole
# where pypdf splits them at text-run boundaries ("Registran t", "Financi al Data"): better chunks for both
# BM25 and the embedder. PDFium is one C++ library per process and is not thread-safe: every call into it
# below holds _PDFIUM. (Ingest parses in its sandbox process, one file at a time; the lock is for
# in-process callers such as SLMRAG_PARSE_ISOLATION=0 or a user's own threads.)
_PDFIUM = threading.Lock()
# pypdfium2's error codes (FPDF_ERR_*), for the messages a user can act on.
_ERR_PASSWORD, _ERR_SECURITY = 4, 5


def _open_pdf(path: Path):
    import pypdfium2 as pdfium

    with _PDFIUM:
        try:
            doc = pdfium.PdfDocument(str(path))  # an empty user password (common on SEC filings) opens as is
            n = len(doc)
        except pdfium.PdfiumError as exc:
            code = getattr(exc, "err_code", None)
            if code == _ERR_PASSWORD:
                raise DocumentError(
                    f"{path}: the PDF is protected by a password; save an unencrypted copy "
                    "(e.g. qpdf --decrypt --password=PASSWORD in.pdf out.pdf) and ingest that."
                ) from exc
            if code == _ERR_SECURITY:
                raise DocumentError(f"{path}: the PDF uses an encryption scheme PDFium does not support; "
                                    "save an unencrypted copy (e.g. with qpdf --decrypt) and ingest that.") from exc
            raise DocumentError(f"{path}: not a readable PDF ({' '.join(str(exc).split())[:120]}); "
                                "the file may be corrupt or truncated, re-export or re-download it.") from exc
    return doc, n


def _page_text(doc, i: int) -> str:
    with _PDFIUM:
        page = doc[i]
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_bounded()
            finally:
                textpage.close()
        finally:
            page.close()
    return pdfium_text(text)


def pdfium_text(text: str) -> str:
    """PDFium's page text as plain text: it ends lines with CRLF and writes a hyphen that breaks a word at a
    line end as U+0002 ("cloud\x02based" is "cloud-based" on the page)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x02", "-")


def iter_pdf_pages(doc, n: int, path: Path, *, max_pages: int, deadline: float) -> Iterator[Page]:
    try:
        if n > max_pages:
            raise DocumentError(
                f"{path}: has {n} pages, over the limit of {max_pages} (ingest.max_pages in the pack); "
                "split the file or raise the limit."
            )
        text_pages = 0
        # The limit counts this parser's own time only: the consumer (chunking, embedding, a full pipe to the
        # ingesting process) may hold a page for a while, and that must not count against the file.
        budget: float | None = None
        spent = 0.0
        for i in range(n):
            if budget is None:
                budget = deadline - time.monotonic()
            if spent > budget:
                raise DocumentError(f"{path}: parsing took longer than the limit (ingest.parse_timeout_s); stopped at page {i + 1}.")
            t = time.monotonic()
            try:
                text = _page_text(doc, i)
            except MemoryError:
                raise  # reported by the parse sandbox, which then restarts its worker
            except Exception as exc:  # a page PDFium cannot load
                raise DocumentError(f"{path}: page {i + 1} could not be read ({type(exc).__name__}); the PDF may be corrupt.") from exc
            text = _storable(text.replace("\x00", ""))
            spent += time.monotonic() - t
            if text.strip():
                text_pages += 1
            yield Page(text=text, page=i + 1)
        if text_pages == 0:
            raise DocumentError(
                f"{path}: no extractable text on any of its {n} page(s) - probably a scanned image PDF; "
                "run OCR first (e.g. ocrmypdf in.pdf out.pdf) and ingest the result."
            )
    finally:
        with _PDFIUM:
            doc.close()


def _storable(text: str) -> str:
    """Reliability fix: a PDF's broken UTF-16 text can decode into lone surrogates, which SQLite and the
    tokenizer cannot encode; replace them rather than fail later, half-way through a write."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def pdf_info(doc, n: int, path: Path) -> DocumentInfo:
    try:
        with _PDFIUM:
            title = (doc.get_metadata_dict().get("Title") or "").strip()
    except Exception:
        title = ""
    return DocumentInfo(title=title or title_from_filename(path), kind="pdf", pages=n)


# ----------------------------------------------------------------------------------------- dispatcher
def load(path: Path, *, max_pages: int = 5000, timeout_s: float = 300.0) -> tuple[DocumentInfo, Iterator[Page]]:
    """Return the document's info and an iterator over its pages. Raises DocumentError on bad input."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(
            f"{path}: unsupported file type '{suffix or '(none)'}'; slmrag reads .pdf, .txt, .md and .html."
        )
    deadline = time.monotonic() + timeout_s
    if suffix == ".pdf":
        if path.stat().st_size == 0:
            raise DocumentError(f"{path}: the file is empty (0 bytes); nothing to index.")
        with path.open("rb") as fh:
            head = fh.read(1024)
        if b"%PDF" not in head:
            raise DocumentError(f"{path}: has a .pdf name but is not a PDF (no %PDF header); check the file.")
        doc, n = _open_pdf(path)
        return pdf_info(doc, n, path), iter_pdf_pages(doc, n, path, max_pages=max_pages, deadline=deadline)
    text = decode_text(path.read_bytes(), path)
    if suffix in (".html", ".htm"):
        text, title = html_to_text(text)
        info = DocumentInfo(title=title or title_from_filename(path), kind="html")
    else:
        kind = "markdown" if suffix in (".md", ".markdown") else "text"
        info = DocumentInfo(title=_first_heading(text) or title_from_filename(path), kind=kind)
    text = text.replace("\x00", "").replace("\r\n", "\n")
    if not text.strip():
        raise DocumentError(f"{path}: contains no text (only whitespace); nothing to index.")
    return info, iter([Page(text=text, page=None)])


def _first_heading(text: str) -> str:
    for line in text.splitlines()[:20]:
        m = re.match(r"^#{1,3}\s+(.+)", line.strip())
        if m:
            return m.group(1).strip()[:200]
    return ""
