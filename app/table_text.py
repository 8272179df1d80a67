"""How a financial table reads when a PDF has been turned into plain text.

PDFium writes a statement line as single-spaced words followed by its figures ("Net income $ 3,033 $ 10,073
$ 11,588") and the column header as lines of periods ("Year Ended December 31," / "2017 2018 2019", or one
date per line). Chunking (:mod:`ingest.chunking`) uses these rules to keep a table's header with every
chunk of its rows; the answer stage (:mod:`app.answers.tables`) uses them to read a cell under a year.
One owner, so that what ingest calls a table row is what an answer reads as one.
"""

from __future__ import annotations

import re

# One figure: a number (with thousands separators, decimals, a bracketed negative or a %), or a dash for an
# empty cell. A trailing comma is not part of a figure: "February 3, 2018" is a date, not the figures 3 and
# 2018.
_FIGURE = re.compile(r"\(?-?[$€£]?\d{1,3}(?:,\d{3})*(?:\.\d+)?\)?%?|\(?-?[$€£]?\d+(?:\.\d+)?\)?%?|[—–-]")
_CURRENCY = {"$", "€", "£", "%"}

MONTH_WORDS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
               "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
               "nov", "dec"}
PERIOD_WORDS = MONTH_WORDS | {"year", "years", "ended", "ending", "as", "of", "at", "fiscal", "fy", "and", "the",
                              "three", "six", "nine", "twelve", "months", "weeks", "quarter", "period", "for"}
_YEAR = re.compile(r"(?<!\d)((?:19|20)\d\d)(?!\d)")


def figure_row(line: str) -> tuple[str, list[str]]:
    """(label, figures) of a single-spaced row: the figures are the run of figure tokens (currency signs
    between them dropped) that ends the line, the label what comes before. No figures when the run holds no
    number (a line ending in dashes only)."""
    tokens = line.split()
    k, figures = len(tokens), []
    while k > 0:
        tok = tokens[k - 1]
        if tok in _CURRENCY:
            k -= 1
        elif _FIGURE.fullmatch(tok):
            figures.insert(0, tok)
            k -= 1
        else:
            break
    if not any(any(ch.isdigit() for ch in f) for f in figures):
        return " ".join(tokens), []
    return " ".join(tokens[:k]), figures


def is_figure_row(line: str) -> bool:
    """A single-spaced row: a label (or none, for a row of years) and two or more figures ending the line.
    A sentence that ends in figures ends with its full stop, so it is not one."""
    label, figures = figure_row(line.strip())
    return len(figures) >= 2 and (not label or sum(c.isalpha() for c in label) >= 2)


def is_period_line(line: str) -> bool:
    """A line of a column header made of periods only - "2017 2018 2019", "Year Ended December 31,",
    "February 2, 2019 February 3, 2018", "August 29," - no row label, no figure but years and days."""
    tokens = re.findall(r"[A-Za-z]+|\d[\d,.]*", line)
    if not tokens:
        return False
    words = [t.lower() for t in tokens if t[0].isalpha()]
    numbers = [t.rstrip(",.") for t in tokens if t[0].isdigit()]
    if any(w not in PERIOD_WORDS for w in words):
        return False
    if any(not (_YEAR.fullmatch(x) or (x.isdigit() and int(x) <= 31)) for x in numbers):
        return False
    return any(len(x) == 4 for x in numbers) or any(w in MONTH_WORDS or w in ("ended", "ending") for w in words)


def period_years(line: str) -> list[str]:
    """The years a line of periods names, in column order."""
    return _YEAR.findall(line)


def heads_rows(label: str) -> bool:
    """Whether a table's line without figures, ``label``, is a section heading the rows below it ("Earnings per
    share", "Current assets:"), not a note on units wholly in parentheses ("(In millions)")."""
    s = label.strip()
    return sum(c.isalpha() for c in s) >= 2 and not (s.startswith("(") and s.endswith(")"))


def plain_tables(text: str) -> list[tuple[dict[int, str], list[list[str]], list[str]]]:
    """(column -> year, rows, sections) for each plain-text table in ``text`` whose header of periods is in it:
    a row is ``[label, figure, ...]`` with as many figures as the header has years (column 1 is the first
    year); ``sections[i]`` is the line without figures that heads row ``i`` ("Earnings per share" over
    "Basic" and "Diluted", "" before any), which tells apart rows whose own labels are the same."""
    out: list[tuple[dict[int, str], list[list[str]], list[str]]] = []
    years: list[str] = []
    rows: list[list[str]] = []
    sections: list[str] = []
    section = ""
    header_open = False  # still reading the header's lines (a date per line, "Year Ended" then the years)
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("|"):
            continue
        if is_period_line(s):
            if rows or not header_open:
                if rows:
                    out.append(({i + 1: y for i, y in enumerate(years)}, rows, sections))
                years, rows, sections, section = [], [], [], ""
            years.extend(period_years(s))
            header_open = True
            continue
        header_open = False
        label, figures = figure_row(s)
        if len(figures) == len(years) + 1 and re.fullmatch(r"\(\d\)", figures[0]):
            label, figures = f"{label} {figures[0]}", figures[1:]  # a footnote marker: "Total debt (1) 10 20"
        if years and label and len(figures) == len(years):
            rows.append([label, *figures])
            sections.append(section)
        elif years and not figures and heads_rows(label):
            section = label
    if years and rows:
        out.append(({i + 1: y for i, y in enumerate(years)}, rows, sections))
    return out
