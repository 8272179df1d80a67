"""An HTML table's cells laid out as a markdown table (``| label | 2019 | 2018 |``).

Why: financial filings (SEC EDGAR 10-K/10-Q are HTML) keep their figures in tables, and slmrag reads a
figure by its row and its column header (app/answers/tables.py, the prompt the model sees). Flattened to
running text, "Net sales $ 260,174 $ 265,595" loses which year each figure belongs to.

Filings lay tables out for the eye, not for machines: a year header spans the three grid columns of "$",
the figure and a closing ")"; a title ("Year Ended December 31,") spans all the years; empty spacer
columns sit between the figures. So: fragments are merged into the figure they belong to ("$" and "(" to the
next cell, ")" and "%" to the previous one), the table's columns are the groups of grid columns that cells
one grid column wide occupy (joined where a merged figure covers several), and each wider cell (a year over
its "$ figure )", a title over all the years) lands in the first column group it overlaps. Plain tables (one grid
column per cell, no fragments) come out cell for cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OPENERS = {"$", "(", "$(", "($", "€", "£", "¥"}
_CLOSERS = {")", "%", ")%", "%)", "pts", "bps"}


@dataclass
class Cell:
    start: int  # first grid column (colspan expanded)
    end: int  # last grid column, inclusive
    text: str
    narrow: bool = True  # made of cells one grid column wide (body cells; not a header spanning several)


def _clean(text: str) -> str:
    return " ".join(text.replace("|", "/").split())


def _merged(row: list[Cell]) -> list[Cell]:
    """The row's non-empty cells with "$" / "(" joined to the next cell and ")" / "%" to the previous one."""
    cells = [Cell(c.start, c.end, _clean(c.text), c.narrow) for c in row]
    cells = [c for c in cells if c.text]
    out: list[Cell] = []
    carry: Cell | None = None
    for c in cells:
        if c.text in _OPENERS:
            carry = Cell(carry.start if carry else c.start, c.end, (carry.text if carry else "") + c.text,
                         c.narrow and (carry is None or carry.narrow))
            continue
        if carry is not None:
            joined = f"{carry.text}{c.text}" if carry.text.endswith("(") else f"{carry.text} {c.text}"
            c = Cell(carry.start, c.end, joined, c.narrow and carry.narrow)
            carry = None
        if c.text in _CLOSERS and out:
            prev = out[-1]
            out[-1] = Cell(prev.start, c.end, prev.text + c.text, prev.narrow and c.narrow)
            continue
        out.append(c)
    if carry is not None:
        out.append(carry)
    return out


def _groups(rows: list[list[Cell]]) -> list[tuple[int, int]]:
    """Column groups: grid columns joined wherever one narrow cell spans them (overlapping intervals)."""
    narrow = [c for row in rows for c in row if c.narrow]
    spans = sorted((c.start, c.end) for c in (narrow or [c for row in rows for c in row]))
    groups: list[list[int]] = []
    for s, e in spans:
        if groups and s <= groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], e)
        else:
            groups.append([s, e])
    return [(s, e) for s, e in groups]


def _column(groups: list[tuple[int, int]], cell: Cell) -> int:
    for i, (s, e) in enumerate(groups):
        if cell.start <= e and cell.end >= s:
            return i
    # in no body column (a header over a spacer): the nearest group to its left, else the first
    left = [i for i, (s, _) in enumerate(groups) if s <= cell.start]
    return left[-1] if left else 0


_FIGURE = re.compile(r"^[$€£¥(]*\s*-?\d[\d,]*(\.\d+)?\s*\)?\s*%?\)?$")
_YEAR = re.compile(r"^(19|20)\d\d$")


def _has_figure(row: list[str]) -> bool:
    return any(_FIGURE.match(c) and not _YEAR.match(c) for c in row if c)


def layout(rows: list[list[Cell]]) -> list[str]:
    """Markdown table lines for ``rows`` (each a list of cells in grid order); [] for an empty table.

    Above the first row with a figure, a cell over several columns (a title over the years) becomes a
    caption line before the table, and the other rows there are joined column by column into the one
    header row a markdown table has: the chunker repeats that row in every chunk of a long table, so each
    chunk keeps its years."""
    merged = [m for m in (_merged(r) for r in rows) if m]
    if not merged:
        return []
    groups = _groups(merged)
    # the rows above the first row with a figure are the header; a table with no figure has none
    top = next((i for i, row in enumerate(merged) if _has_figure([c.text for c in row])), 0)
    grid: list[list[str]] = []
    captions: list[str] = []
    head = 0  # header rows in grid
    for i, row in enumerate(merged):
        out = [""] * len(groups)
        for c in row:
            if i < top and sum(1 for s, e in groups if c.start <= e and c.end >= s) > 1:
                captions.append(c.text)  # a title over several columns ("Year Ended December 31,")
                continue
            k = _column(groups, c)
            out[k] = f"{out[k]} {c.text}".strip() if out[k] else c.text
        if any(out):
            grid.append(out)
            head += i < top
    if head > 1:
        grid = [[" ".join(r[k] for r in grid[:head] if r[k]) for k in range(len(groups))]] + grid[head:]
    lines = ["| " + " | ".join(r) + " |" for r in grid]
    lines.insert(1, "| " + " | ".join("---" for _ in groups) + " |")
    return captions + lines
