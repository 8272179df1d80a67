#!/usr/bin/env python3
"""Build the starter-corpus PDFs from plain-text sources.

Reads   scripts/pdf_sources/<pack>/<name>.txt
Writes  domains/<pack>/corpus/<name>.pdf

Rules for the sources:
  * latin-1 text only (the PDF core fonts cannot encode anything else);
  * a line that contains only a form feed (U+000C) starts a new PDF page;
  * a page that overflows continues automatically on the next page (a
    warning is printed, because domains/EXAMPLES.md cites page numbers);
  * lines that look tabular (leading spaces or runs of 3+ spaces) are set in
    Courier so that plain-text column alignment survives;
  * short ALL-CAPS lines are set in bold as headings.

Nothing is deleted.  Requires fpdf2 (`pip install fpdf2`, import name `fpdf`).

Usage:
  python scripts/make_starter_pdfs.py            # build all packs
  python scripts/make_starter_pdfs.py legal      # build only some packs
  python scripts/make_starter_pdfs.py --check    # also verify with pypdf
"""
from __future__ import annotations

import argparse
import datetime as _dt
import re
import sys
from pathlib import Path

try:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos
except ImportError:  # pragma: no cover - exercised only without fpdf2
    sys.exit("fpdf2 is required: pip install fpdf2")

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCES_DIR = REPO_ROOT / "scripts" / "pdf_sources"
DOMAINS_DIR = REPO_ROOT / "domains"

FORM_FEED = "\f"
BODY_FONT = ("Helvetica", 10)
TABLE_FONT = ("Courier", 9)
LINE_H = 4.6  # mm
BLANK_H = 2.5  # mm of space for an empty line
MARGIN_LR = 20  # mm
MARGIN_TOP = 18  # mm
MARGIN_BOTTOM = 18  # mm
# Fixed date so that rebuilding gives byte-stable output apart from fpdf2 version.
CREATION_DATE = _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc)

_TABULAR = re.compile(r"^\s+\S|\S {3,}\S")


def split_pages(text: str) -> list[str]:
    """Split source text into pages at lines holding only a form feed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    pages: list[list[str]] = [[]]
    for line in text.split("\n"):
        if line.strip(" \t") == FORM_FEED:
            pages.append([])
        else:
            if FORM_FEED in line:
                raise ValueError("form feed must be on a line of its own")
            pages[-1].append(line)
    return ["\n".join(p).strip("\n") for p in pages]


def is_tabular(line: str) -> bool:
    return bool(_TABULAR.search(line))


def is_heading(line: str) -> bool:
    s = line.strip()
    letters = [c for c in s if c.isalpha()]
    return (
        0 < len(s) <= 90
        and len(letters) >= 3
        and all(c.isupper() for c in letters)
        and not is_tabular(line)
    )


class _StarterPDF(FPDF):
    def __init__(self, label: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self._label = label

    def footer(self) -> None:  # fpdf2 hook
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(120, 120, 120)
        self.cell(0, 5, f"{self._label} - page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def build_pdf(src: Path, dest: Path) -> tuple[int, int]:
    """Render src to dest. Returns (intended_pages, actual_pages)."""
    text = src.read_text(encoding="utf-8")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        line_no = text.count("\n", 0, exc.start) + 1
        raise ValueError(f"{src}: non-latin-1 character {bad!r} on line {line_no}") from exc

    pages = split_pages(text)
    pdf = _StarterPDF(label=dest.name)
    pdf.set_title(dest.stem.replace("_", " "))
    pdf.set_author("slmrag starter corpus (fictional sample material)")
    pdf.set_creator("scripts/make_starter_pdfs.py")
    pdf.set_creation_date(CREATION_DATE)
    pdf.set_margins(MARGIN_LR, MARGIN_TOP, MARGIN_LR)
    pdf.set_auto_page_break(auto=True, margin=MARGIN_BOTTOM)
    pdf.alias_nb_pages()

    for page_text in pages:
        pdf.add_page()
        for line in page_text.split("\n"):
            if not line.strip():
                pdf.ln(BLANK_H)
                continue
            if is_tabular(line):
                pdf.set_font(TABLE_FONT[0], "", TABLE_FONT[1])
                body = line.rstrip()
            elif is_heading(line):
                pdf.set_font(BODY_FONT[0], "B", BODY_FONT[1])
                body = line.strip()
            else:
                pdf.set_font(BODY_FONT[0], "", BODY_FONT[1])
                body = line.strip()
            pdf.multi_cell(0, LINE_H, body, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    dest.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(dest))
    return len(pages), pdf.page_no()


def check_pdf(path: Path) -> None:
    try:
        import pypdf
    except ImportError:
        print("  (pypdf not installed; skipping check)")
        return
    reader = pypdf.PdfReader(str(path))
    for i, page in enumerate(reader.pages, start=1):
        first = " ".join((page.extract_text() or "").split())[:90]
        print(f"  page {i}: {first}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packs", nargs="*", help="pack names (default: all under scripts/pdf_sources)")
    ap.add_argument("--check", action="store_true", help="print page starts extracted with pypdf")
    args = ap.parse_args(argv)

    if not SOURCES_DIR.is_dir():
        print(f"no sources directory: {SOURCES_DIR}", file=sys.stderr)
        return 1
    packs = args.packs or sorted(p.name for p in SOURCES_DIR.iterdir() if p.is_dir())

    status = 0
    built = 0
    for pack in packs:
        src_dir = SOURCES_DIR / pack
        if not src_dir.is_dir():
            print(f"unknown pack {pack!r} (no {src_dir})", file=sys.stderr)
            status = 1
            continue
        for src in sorted(src_dir.glob("*.txt")):
            dest = DOMAINS_DIR / pack / "corpus" / (src.stem + ".pdf")
            try:
                intended, actual = build_pdf(src, dest)
            except ValueError as exc:
                print(f"ERROR {exc}", file=sys.stderr)
                status = 1
                continue
            built += 1
            rel = dest.relative_to(REPO_ROOT)
            print(f"wrote {rel} ({actual} pages)")
            if actual != intended:
                print(
                    f"  WARNING: source has {intended} form-feed pages but the PDF has "
                    f"{actual}; a page overflowed (check page numbers in domains/EXAMPLES.md)",
                    file=sys.stderr,
                )
            if args.check:
                check_pdf(dest)
    if built == 0 and status == 0:
        print("nothing to build", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
