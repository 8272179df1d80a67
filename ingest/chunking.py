"""Token-aware chunking sized for the embedder's window, with domain-aware strategies.

* ``sections``: text is cut into sections at headings (Markdown headings, short all-caps lines) and
  sections are packed into chunks; a section over the budget is cut at paragraphs, then sentences
  (LangChain's RecursiveCharacterTextSplitter, measured in embedder tokens).
* ``legal``: text is first cut into sections at headings and numbered clauses ("7.", "7.2", "Section 4",
  "ARTICLE IV"), so a clause heading always travels with its text; sections are packed into chunks.
* ``finance``: tables (Markdown pipe tables and aligned plain-text rows of figures) are cut by rows, and
  every table chunk repeats the table's header row, so a figure is never separated from its column
  (period) and unit.

Every chunk keeps its character span in the page (or document) text and the nearest section heading;
``embed_text`` puts the document title and heading in front of the text for embedding only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from app.settings import ChunkingSettings
from app.table_text import is_figure_row, is_period_line as _is_period_line

TokenCounter = Callable[[str], int]

# The version of each strategy's rules. Bumped when a change of the rules gives a document other chunks, so
# that an index built under the old rules is re-chunked on its next ingest (see chunking_identity).
# finance 2: single-spaced PDF statement rows and lines of periods are tables (their header in every chunk).
RULES = {"sections": 1, "legal": 1, "finance": 2}


def chunking_identity(settings: ChunkingSettings, rules: int | None = None) -> str:
    """What decides a document's chunks and their vectors: the strategy and its rules' version, the sizes and
    the contextual header. Ingest stores it with each document and re-chunks an unchanged file whose stored
    identity differs. ``rules``: another version than the current one (1: what a document ingested before
    identities were stored was chunked with)."""
    version = RULES.get(settings.strategy, 1) if rules is None else rules
    return (f"{settings.strategy} v{version} {settings.chunk_tokens}/{settings.overlap_tokens} tokens"
            f"{' header' if settings.contextual_header else ''}")


@dataclass
class Chunk:
    text: str
    page: int | None
    start: int
    end: int
    heading: str = ""

    def embed_text(self, title: str, contextual_header: bool) -> str:
        if not contextual_header:
            return self.text
        head = " > ".join(p for p in (title, self.heading) if p)
        return f"{head}\n{self.text}" if head else self.text


# Lines that start a section: Markdown headings, numbered clauses, "Section 5", "ARTICLE IV", and short
# all-caps lines. Kept general on purpose: they are how contracts, guidelines and filings are laid out.
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_CLAUSE = re.compile(
    r"^\s*(?:(?:section|article|clause|schedule|exhibit|part)\s+[0-9ivxlcdm]+[a-z]?\b"
    r"|\d{1,3}(?:\.\d{1,3}){0,3}\.?\s+[A-Z(\"']"
    r"|\(?[a-z]\)\s+[A-Z]"
    r"|[IVXLC]{1,6}\.\s+[A-Z])",
    re.IGNORECASE,
)


def _is_heading_line(line: str) -> bool:
    stripped = line.strip()
    if not stripped or len(stripped) > 120:
        return False
    if _MD_HEADING.match(stripped):
        return True
    letters = [c for c in stripped if c.isalpha()]
    return len(letters) >= 4 and all(c.isupper() for c in letters) and not stripped.endswith((".", ",", ";"))


def _is_clause_start(line: str) -> bool:
    return bool(_CLAUSE.match(line)) or _is_heading_line(line)


def _is_title_line(line: str) -> bool:
    """A line that only names what follows: a heading, or a short numbered clause title ("7. Term",
    "Section 4 Fees") rather than a clause that starts straight into its sentence."""
    stripped = line.strip()
    if _is_heading_line(stripped):
        return True
    return (bool(_CLAUSE.match(stripped)) and len(stripped) <= 60
            and not stripped.endswith((".", ";", ":", ",", ")")))


def _leading_titles_end(text: str, start: int, end: int) -> int:
    """Offset just after the title lines (and blank lines) that open ``text[start:end]``."""
    pos = start
    for line in text[start:end].splitlines(keepends=True):
        if line.strip() and not _is_title_line(line):
            break
        pos += len(line)
    return pos


def _heading_text(line: str) -> str:
    return re.sub(r"^\s*#{1,6}\s*", "", line).strip()[:160]


class Chunker:
    """Splits page text into :class:`Chunk` objects. Cheap to build; needs a token counter."""

    def __init__(self, settings: ChunkingSettings, count_tokens: TokenCounter):
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.settings = settings
        self.count = count_tokens
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=settings.chunk_tokens,
            chunk_overlap=settings.overlap_tokens,
            length_function=count_tokens,
            separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
            keep_separator="end",
            add_start_index=True,
            strip_whitespace=True,
        )

    # ------------------------------------------------------------------ public
    def split(self, text: str, page: int | None = None) -> list[Chunk]:
        if not text.strip():
            return []
        match self.settings.strategy:
            case "legal":
                return self._split_sections(text, page, clause_aware=True)
            case "finance":
                return self._split_finance(text, page)
            case _:  # "sections"
                return self._split_sections(text, page, clause_aware=False)

    # ------------------------------------------------------------------ helpers
    def _recursive(self, text: str, offset: int, page: int | None, heading: str,
                   limit: int | None = None) -> list[Chunk]:
        splitter = self._splitter
        if limit is not None and limit < self.settings.chunk_tokens:
            from langchain_text_splitters import RecursiveCharacterTextSplitter

            splitter = RecursiveCharacterTextSplitter(
                chunk_size=limit, chunk_overlap=min(self.settings.overlap_tokens, limit // 4),
                length_function=self.count, separators=self._splitter._separators,
                keep_separator="end", add_start_index=True, strip_whitespace=True)
        chunks = []
        cursor = 0
        for body in splitter.split_text(text):
            # Find each chunk ourselves, moving forward: LangChain's add_start_index searches from the
            # previous chunk's end and reports -1 for a chunk that begins inside the overlap (found by
            # tests/test_fuzz.py). Chunks come in order, so the first match at or after the previous
            # chunk's start is the right one.
            at = text.find(body, cursor)
            if at < 0:
                at = max(0, text.find(body))
            chunks.append(Chunk(body, page, offset + at, offset + at + len(body), heading))
            cursor = at + 1
        return chunks

    def _sections(self, text: str, clause_aware: bool) -> list[tuple[int, int, str]]:
        """Cut text into (start, end, heading) sections at heading (and, for legal, clause) lines."""
        starts: list[tuple[int, str]] = [(0, "")]
        pos = 0
        for line in text.splitlines(keepends=True):
            is_start = _is_clause_start(line) if clause_aware else _is_heading_line(line)
            if is_start and pos > 0:
                starts.append((pos, _heading_text(line)))
            elif is_start and pos == 0:
                starts[0] = (0, _heading_text(line))
            pos += len(line)
        sections = []
        pending: tuple[int, str] | None = None
        for i, (s, h) in enumerate(starts):
            e = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            if not text[s:e].strip():
                continue
            if pending is not None:  # a title-only section opens this one
                s, h = pending[0], pending[1] or h
                pending = None
            if _leading_titles_end(text, s, e) >= e and e < len(text):
                # Only titles ("## 7. TERMINATION"): they belong with the text below them, never at the
                # end of the previous chunk.
                pending = (s, h)
                continue
            sections.append((s, e, h))
        if pending is not None:
            sections.append((pending[0], len(text), pending[1]))
        return sections

    def _split_sections(self, text: str, page: int | None, clause_aware: bool) -> list[Chunk]:
        limit = self.settings.chunk_tokens
        chunks: list[Chunk] = []
        buf_start: int | None = None
        buf_end = 0
        buf_heading = ""
        last_heading = ""

        def flush():
            nonlocal buf_start
            if buf_start is not None:
                body = text[buf_start:buf_end]
                lead = len(body) - len(body.lstrip())
                body = body.strip()
                if body:
                    chunks.append(Chunk(body, page, buf_start + lead, buf_start + lead + len(body), buf_heading))
            buf_start = None

        for s, e, heading in self._sections(text, clause_aware):
            # A numbered clause is its own heading; top-level headings give context to the clauses below.
            first_line = text[s:e].splitlines()[0] if text[s:e] else ""
            if heading and _is_heading_line(first_line):
                last_heading = heading
            # A short numbered clause title ("7. TERMINATION", "Section 4 Fees") names its section; a
            # clause that starts straight into its sentence does not, so it inherits the last heading.
            section_heading = heading if heading and len(heading) <= 60 else last_heading
            n = self.count(text[s:e])
            if n > limit:
                flush()
                chunks.extend(self._split_long_section(text, s, e, page, section_heading))
                continue
            if buf_start is not None and self.count(text[buf_start:e]) <= limit:
                buf_end = e  # merge small sections so chunks are not tiny
                continue
            flush()
            buf_start, buf_end, buf_heading = s, e, section_heading
        flush()
        return chunks

    def _split_long_section(self, text: str, s: int, e: int, page: int | None, heading: str) -> list[Chunk]:
        """Split a section over the budget; its opening title lines go into the first chunk, which is
        sized so the title and the start of its text fit together."""
        body = _leading_titles_end(text, s, e)
        if body <= s or body >= e:
            return self._recursive(text[s:e], s, page, heading)
        title_tokens = self.count(text[s:body])
        room = self.settings.chunk_tokens - title_tokens
        if room < 16:  # an absurdly long title: plain splitting is the best we can do
            return self._recursive(text[s:e], s, page, heading)
        first, *rest = self._recursive(text[body:e], body, page, heading, limit=room) or [None]
        if first is None:
            return self._recursive(text[s:e], s, page, heading)
        lead = len(text[s:body]) - len(text[s:body].lstrip())
        merged = text[s + lead:first.end]
        if self.count(merged) > self.settings.chunk_tokens:
            return self._recursive(text[s:e], s, page, heading)
        out = [Chunk(merged, page, s + lead, first.end, heading)]
        if rest:
            # The remaining text was split for the smaller first budget; re-split it at full size.
            out.extend(self._recursive(text[rest[0].start:e], rest[0].start, page, heading))
        return out

    # ------------------------------------------------------------------ finance
    def _split_finance(self, text: str, page: int | None) -> list[Chunk]:
        chunks: list[Chunk] = []
        blocks = list(_table_blocks(text))
        for idx, (kind, s, e) in enumerate(blocks):
            caption = ""
            if kind == "text" and idx + 1 < len(blocks) and blocks[idx + 1][0] == "table":
                e = _caption_start(text, s, e)  # the table's caption travels with the table instead
            if kind == "table" and idx > 0 and blocks[idx - 1][0] == "text":
                ps, pe = blocks[idx - 1][1], blocks[idx - 1][2]
                caption = text[_caption_start(text, ps, pe):pe].strip()
            block = text[s:e]
            if not block.strip():
                continue
            if kind == "table":
                chunks.extend(self._table_chunks(block, s, page, _nearest_heading(text, s), caption))
                continue
            for c in self._split_sections(block, page, clause_aware=False):
                # Spans come back relative to the block: shift them into page coordinates.
                chunks.append(Chunk(c.text, page, c.start + s, c.end + s, c.heading))
        return chunks

    def _table_chunks(self, block: str, offset: int, page: int | None, heading: str,
                      caption: str = "") -> list[Chunk]:
        lines = block.splitlines(keepends=True)
        header_n = _header_rows(lines)
        # Every chunk of the table starts with its caption (title, units) and its column header (periods).
        header = (caption + "\n" if caption else "") + "".join(lines[:header_n])
        limit = self.settings.chunk_tokens
        if caption and self.count(header) > limit // 2:
            header = "".join(lines[:header_n])  # a long caption would crowd out the rows: keep the columns only
        chunks: list[Chunk] = []
        pos = offset + len("".join(lines[:header_n]))
        rows: list[str] = []
        rows_start = pos
        for line in lines[header_n:]:
            candidate = header + "".join(rows) + line
            if rows and self.count(candidate) > limit:
                # Row labels ("Earnings per share") and blank lines at the end belong to the rows below them.
                carry: list[str] = []
                while len(rows) > 1 and (not rows[-1].strip() or not _is_table_line(rows[-1])):
                    carry.insert(0, rows.pop())
                chunks.append(_table_chunk(header, rows, rows_start, page, heading))
                rows, rows_start = carry, pos - len("".join(carry))
            rows.append(line)
            pos += len(line)
        if rows or not chunks:
            chunks.append(_table_chunk(header, rows, rows_start, page, heading))
        return chunks


def _table_chunk(header: str, rows: list[str], rows_start: int, page: int | None, heading: str) -> Chunk:
    body = (header + "".join(rows)).strip()
    # The span covers the rows this chunk adds; the repeated header is context, not new text.
    return Chunk(body, page, rows_start, rows_start + len("".join(rows)), heading)


def _nearest_heading(text: str, pos: int) -> str:
    for line in reversed(text[:pos].splitlines()[-40:]):
        if _is_heading_line(line):
            return _heading_text(line)
    return ""


_NUM = re.compile(r"\(?-?\$?\d[\d,]*\.?\d*\)?%?")


def _is_table_line(line: str) -> bool:
    s = line.strip()
    if s.startswith("|") and s.count("|") >= 2:
        return True
    # Aligned plain-text rows: a label followed by two or more figures separated by runs of spaces.
    cells = [c for c in re.split(r"\s{2,}|\t", s) if c]
    figures = sum(1 for c in cells[1:] if _NUM.fullmatch(c.replace(" ", "")))
    if len(cells) >= 3 and figures >= 2:
        return True
    # Single-spaced rows, as PDFium extracts a statement: a label (or none, for a row of years) and two or
    # more figures ending the line. A sentence that ends in figures ends with its full stop, so it is not one.
    return is_figure_row(s)


def _is_period_row(line: str) -> bool:
    """A plain-text column header made of figures only (years), with no row label in front."""
    cells = [c for c in re.split(r"\s{2,}|\t", line.strip()) if c]
    return bool(cells) and not any(ch.isalpha() for ch in cells[0])


def _is_md_table_start(lines: list[str], k: int) -> bool:
    """A Markdown pipe row followed by a separator row (|---|---|): the header of a new table."""
    return (k + 1 < len(lines) and lines[k].strip().startswith("|")
            and bool(re.fullmatch(r"\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*", lines[k + 1])))


def _is_caption_line(line: str) -> bool:
    s = line.strip()
    if _is_title_line(s):
        return True
    # A units / basis line such as "(in thousands of USD, except per-share amounts)", or "... (USD m):".
    if s.startswith("(") and s.endswith(")") and len(s) <= 120:
        return True
    if len(s) > 100 or s.endswith("."):
        return False
    if s.endswith(":") or re.search(r"\((?:in |amounts in |USD|EUR|GBP|\$|unaudited)", s, re.IGNORECASE):
        return True
    # A units line without brackets ("$ in millions, except per share amounts"), and a statement's title
    # in title case ("Consolidated Balance Sheets"), as filings print them above the columns.
    if re.match(r"^[$€£]?\s*(?:amounts\s+)?in\s+(?:thousands|millions|billions)\b", s, re.IGNORECASE):
        return True
    words = re.findall(r"[A-Za-z][A-Za-z'’&-]*", s)
    return s.lower() != "table of contents" and 2 <= len(words) <= 8 and len(words) == len(s.split()) and all(
        w[0].isupper() or w.lower() in {"of", "and", "in", "for", "the", "to", "on"} for w in words)


def _caption_start(text: str, s: int, e: int) -> int:
    """Where the caption (up to three title / units lines) at the end of ``text[s:e]`` begins; ``e`` if none."""
    pos = e
    start = e
    taken = 0
    for line in reversed(text[s:e].splitlines(keepends=True)):
        if not line.strip():
            pos -= len(line)
            continue
        if taken >= 3 or not _is_caption_line(line):
            break
        pos -= len(line)
        start = pos
        taken += 1
    return start


def _header_rows(lines: list[str]) -> int:
    """How many leading lines of a table block are its header (column labels, Markdown separator)."""
    if not lines:
        return 0
    if lines[0].strip().startswith("|"):
        if len(lines) > 1 and re.fullmatch(r"\s*\|?[\s:\-|]+\|?\s*", lines[1]):
            return 2
        return 1
    # Plain text: the lines of periods above the first row ("Year Ended December 31," / "2017 2018 2019",
    # or a date per line), when the block starts with them; else the one line above the rows.
    last = 0
    for k, line in enumerate(lines[:_HEADER_REACH]):
        if _is_period_line(line):
            last = k + 1
        elif line.strip() and (_is_table_line(line) or not _is_short_label(line)):
            break
    return last or 1


# How far above a plain-text table's first row its column header of periods may start: statements put a
# few label lines ("ASSETS", "Current assets") between the periods and the first figures.
_HEADER_REACH = 10


def _is_short_label(line: str) -> bool:
    s = line.strip()
    return 0 < len(s) <= 60 and not s.endswith(".") and sum(c.isalpha() for c in s) >= 3


def _plain_header_start(lines: list[str], flags: list[bool], i: int, floor: int) -> int:
    """The first line of a plain-text table that starts its rows at line ``i``: the topmost line of periods
    among the lines just above it (label lines between them and the rows allowed); ``i`` if none."""
    start, k = i, i - 1
    while k >= floor and i - k <= _HEADER_REACH:
        line = lines[k]
        if _is_period_line(line):
            start = k
        elif line.strip() and (flags[k] or not _is_short_label(line)):
            break
        k -= 1
    return start


def _table_blocks(text: str) -> Iterable[tuple[str, int, int]]:
    """Yield ('table'|'text', start, end). A table starts one line early to take its header row."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    flags = [_is_table_line(line) for line in lines]
    i = 0
    cur_text_start = 0
    n = len(lines)
    while i < n:
        if flags[i] and (i + 1 < n and flags[i + 1] or lines[i].strip().startswith("|")):
            plain = not lines[i].strip().startswith("|")

            def label(k: int) -> bool:
                """A row label inside a plain-text table: up to three short lines ("LIABILITIES AND EQUITY",
                "Current liabilities:") followed by a row of figures."""
                if not plain:
                    return False
                for m in range(k, min(k + 4, n)):
                    if m > k and flags[m] and not _is_period_line(lines[m]):
                        return not lines[m].strip().startswith("|")
                    if flags[m] or not _is_short_label(lines[m]) or _is_period_line(lines[m]):
                        return False
                return False

            j = i
            while j < n:
                if j > i and _is_md_table_start(lines, j):
                    break  # the next Markdown table has its own header
                if j > i and plain and _is_period_line(lines[j]):
                    break  # a new column header of periods: the next table (the page's next statement)
                if flags[j] or label(j):
                    j += 1
                elif not lines[j].strip() and j + 1 < n and (flags[j + 1] or label(j + 1)) \
                        and not _is_md_table_start(lines, j + 1):
                    j += 1
                else:
                    break
            start_line = i
            floor = next(k for k in range(n + 1) if offsets[k] >= cur_text_start)
            if plain:
                start_line = _plain_header_start(lines, flags, i, floor)
            # For plain-text tables the column header (periods) is usually the non-empty line just above.
            # (Unless the first row is that header already: a row of years with no label, "  2023  2022".)
            if start_line == i and plain and i > floor and lines[i - 1].strip() and not flags[i - 1] \
                    and not _is_period_row(lines[i]):
                start_line = i - 1
            if offsets[start_line] > cur_text_start:
                yield ("text", cur_text_start, offsets[start_line])
            yield ("table", offsets[start_line], offsets[j])
            cur_text_start = offsets[j]
            i = j
        else:
            i += 1
    if cur_text_start < len(text):
        yield ("text", cur_text_start, len(text))
