"""Answers read off a table: a calculation whose form fixes the arithmetic, or one line item's cell.

Most "calculate" questions over financial tables have one of a few forms - the change of a line item
between two years, its percentage change, its average over years - and for those the arithmetic is fixed
by the form and the inputs are cells of one row under the years' columns. A 135M model rarely writes that
formula right; it is better at nothing here than slmrag is at reading a table. So, as TAT-QA's own
baselines do (tag the cells, choose the operator from a small set), slmrag picks the operator from the
question's form, the row whose label the question names, and the cells under the years the question names,
and shows the formula it evaluated with the cited passage: the analyst checks the formula and the cells.

A question of no such form that names one year and a row ("What was net income in FY2019?") is answered
with that row's cell under that year (:func:`table_value`), shown with its row, year and unit. A ratio the
pack defines by its two rows ("net profit margin": net income over revenue) is computed from them
(:func:`ratio_calculation`). Rows are also found by the other names the pack gives a line item
(``answers.row_names``: "COGS" is "Cost of revenue").

Tables are the markdown tables ingest writes (``| label | 2019 | 2018 |`` with a header row of years) and
the plain-text ones a PDF's statements become (:mod:`app.table_text`). Nothing here is keyed to particular
questions: only the form (change / percentage change / average / one cell) and the years named. When
anything is ambiguous - no such form, fewer years than the form needs, no row whose label the question
names, a missing cell - it returns None and the model's own answer stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from app.answers.arithmetic import FormulaError, evaluate
from app.answers.grounding import content_stems
from app.answers.shapes import table_unit
from app.table_text import heads_rows, plain_tables

# A year the question names, also inside "FY2019" ("FY19" is not read: two digits are too often not a year).
_YEAR = re.compile(r"(?<!\d)(19[5-9]\d|20\d\d)(?!\d)")
_RANGE = re.compile(r"(?<!\d)((?:19|20)\d\d)\s*(?:-|–|to|through)\s*(?:FY)?((?:19|20)\d\d)(?!\d)")
_PERCENT_CHANGE = re.compile(r"\b(percentage|percent|%)\s+(change|increase|decrease|growth)\b|\bgrowth rate\b", re.I)
_CHANGE = re.compile(r"\b(change|difference|increase|decrease)\b", re.I)
_AVERAGE = re.compile(r"\b(average|mean)\b", re.I)
# Words of the question's form, not of the line item it names.
_FORM_WORDS = set(content_stems("percentage percent change difference increase decrease growth rate average mean "
                                "year years fiscal period between"))
# "... change in revenue from FY2016 to FY2017 (in units of percents ...)": the change asked for in percent.
# Not "the change in percentage of sales": a row that is itself a share, whose change is in points.
_IN_PERCENT = re.compile(r"\b(?:in|as an?)\s+(?:units\s+of\s+)?(?:percents?|percentages?)\b(?!\s+of\b)|\bin\s+%",
                         re.IGNORECASE)
_CELL = re.compile(r"^\(?-?\$?\s*\(?\s*(\d[\d,]*(?:\.\d+)?)\s*\)?\s*%?\)?$")


@dataclass
class TableCalc:
    formula: str  # as shown, with the cells as the table writes them
    n: int  # the passage (1-based) the row is in
    row: str  # the row's label
    years: list[str]  # the columns used, in formula order
    operation: str  # "change", "percent_change", "average"; a ratio's "ratio", "ratio_change", "ratio_average";
    # a metric the question defines: "defined"
    cells: list[str]  # the cells' figures as the table writes them (what the grounding check looks up)
    cited: list[int] | None = None  # the passages of its rows when more than ``n`` (a ratio's two rows)
    unitless: bool = False  # amounts divided by amounts (a ratio): shown without the tables' unit


_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec")
_PERIOD_WORDS = set(_MONTHS.split()) | {"year", "years", "ended", "ending", "fiscal", "fy", "as", "of", "at", "the"}


def _period_year(cell: str) -> str | None:
    """The year a column header names: "2019", and period labels that name one year - "December 31, 2019",
    "Year ended June 30, 2019", "Fiscal 2019", "FY2019". Not "2019 vs. 2018" or "2021 - 2022" (two years:
    a change or a range column), nor a label with other words ("2019 Plan")."""
    years = re.findall(r"(?<!\d)((?:19|20)\d\d)(?!\d)", cell)
    if len(years) != 1:
        return None
    rest = re.sub(r"(?<!\d)(?:19|20)\d\d(?!\d)", " ", cell.lower()).replace("fy", " fy ")
    words = re.findall(r"[a-z]+|\d+", rest)
    if any(w.isdigit() and (len(w) > 2 or int(w) > 31) for w in words):
        return None  # another figure than a day of the month
    return years[0] if all(w.isdigit() or w in _PERIOD_WORDS for w in words) else None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(cell: str) -> str | None:
    """A cell as a formula operand: "$8,220" -> "8,220", "(1,234)" -> "(-1,234)", "-" / "" -> None."""
    text = cell.replace("$", "").replace(" ", "")
    m = _CELL.match(text)
    if not m:
        return None
    negative = text.startswith("(") and text.endswith(")") or text.startswith("-")
    return f"(-{m.group(1)})" if negative else m.group(1)


def _tables(text: str) -> list[tuple[dict[int, str], list[list[str]], list[str]]]:
    """(column -> year, rows, each row's section) for each table in ``text`` with a header of years: the
    Markdown tables ingest writes, then the plain-text ones a PDF's statements become
    (:func:`app.table_text.plain_tables`, which says what a section is)."""
    return _markdown_tables(text) + plain_tables(text)


def _markdown_tables(text: str) -> list[tuple[dict[int, str], list[list[str]], list[str]]]:
    out = []
    years: dict[int, str] = {}
    rows: list[list[str]] = []
    sections: list[str] = []
    section = ""
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            cells = _cells(line)
            found = {i: y for i, c in enumerate(cells) if (y := _period_year(c))}
            if len(found) >= 2 and not rows:
                years = found  # the header of years (the latest one before the data rows)
            elif set(cells) <= {"", "---"} or all(set(c) <= set("-: ") for c in cells):
                continue
            elif years and not any(cells[1:]):
                if heads_rows(cells[0]):
                    section = cells[0]  # "| Earnings per share | | |": it heads the rows below, it holds no figure
            elif years:
                rows.append(cells)
                sections.append(section)
        else:
            if years and rows:
                out.append((years, rows, sections))
            years, rows, sections, section = {}, [], [], ""
    return out


def _operation(question: str) -> str | None:
    """The form the question asks for: the earliest of its form words, so that "the change in weighted
    average shares" is a change (the later "average" belongs to the line item's name)."""
    found = [(m.start(), op) for op, pattern in (("percent_change", _PERCENT_CHANGE), ("average", _AVERAGE),
                                                 ("change", _CHANGE)) if (m := pattern.search(question))]
    return min(found)[1] if found else None


def _years(question: str, op: str) -> list[str]:
    """The years the question names: a range expands to every year in it (for an average)."""
    m = _RANGE.search(question)
    named = sorted(set(_YEAR.findall(question)))
    if m and op == "average":
        lo, hi = sorted((int(m.group(1)), int(m.group(2))))
        return [str(y) for y in range(lo, hi + 1)] if hi - lo <= 10 else []
    return named


def _figures(row: list[str], by_year: dict[str, int], years: list[str]) -> list[str] | None:
    """The row's figures under ``years`` (columns ``by_year``), as :func:`_number` reads them; None when one
    is missing."""
    values = [_number(row[by_year[y]]) if by_year[y] < len(row) else None for y in years]
    return None if any(v is None for v in values) else values


def _as_written(value: str) -> str:
    """A figure as the grounding check looks it up in the passage: "(-1,600)" is written "(1,600)"."""
    return f"({value[2:-1]})" if value.startswith("(-") else value


def _says(phrase: str, low: str) -> re.Match | None:
    """Where the lower-cased question ``low`` says ``phrase``, on word boundaries ("cogs", not "cogswheel")."""
    return re.search(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])", low)


def asked_words(question: str, row_names: Mapping[str, Sequence[str]] | None = None) -> list[tuple[set[str], set[str]]]:
    """How ``question`` may name a row: (the content words a row label may share with it, the words the label
    must hold) per reading - years and words of the form aside. First the question's own words (nothing
    required); then, for each line item of ``row_names`` the question says (a phrase, on word boundaries:
    "cogs"), its words with that phrase read as each other name tables give it ("cost of revenue"), and the
    row must then hold that whole name: "Total net sales" is named by "revenue" read as "net sales", "Net
    income" is not (its "net" is the name's, its "income" the question's "statement of income")."""
    low = " ".join(question.lower().split())
    out = [(set(content_stems(_YEAR.sub(" ", low))) - _FORM_WORDS, set())]
    for term, names in (row_names or {}).items():
        if (m := _says(term, low)) is not None:
            for name in names:
                text = f"{low[:m.start()]} {name.lower()} {low[m.end():]}"
                out.append((set(content_stems(_YEAR.sub(" ", text))) - _FORM_WORDS, set(content_stems(name))))
    return out


_TOTAL = set(content_stems("total"))


def _named_by(label: str, readings: list[tuple[set[str], set[str]]]) -> tuple[float, float, bool, int]:
    """How fully the question names a row labelled ``label`` under its best reading: (share of the label's
    content words it says, the same share not counting "Total", whether in the question's own words, how many). Its own words come before another
    name's: "license revenue" is the "License" row, not "Net sales" read for "revenue"."""
    have = set(content_stems(label))
    if not have:
        return 0.0, 0.0, False, 0
    # Second: the share without "Total", which says which line item a row totals, not another one - of two rows
    # the question names equally, "revenue" read as "net sales" names "Total net sales" (all of what it totals),
    # not the component "Net product sales".
    said = (have - _TOTAL) or have
    return max(((len(have & want) / len(have), len(said & want) / len(said), i == 0, len(have & want))
                for i, (want, needed) in enumerate(readings) if needed <= have), default=(0.0, 0.0, False, 0))


def _section_said(section: str, readings: list[tuple[set[str], set[str]]]) -> tuple[int, float]:
    """How many of a row's section's content words the question says under its best reading, and what share of
    them: of two rows both labelled "Diluted", "diluted earnings per share" names the one under "Earnings per
    share" (two words) over the one under "Weighted-average shares outstanding" (one), and "diluted shares
    outstanding" the other way round. (0, 0.0) for a row under no section."""
    have = set(content_stems(section))
    return max(((len(have & want), len(have & want) / len(have)) for want, _ in readings),
               default=(0, 0.0)) if have else (0, 0.0)


# (passage, column -> year, rows, each row's section) per table
Tables = list[tuple[int, dict[int, str], list[list[str]], list[str]]]


def _all_tables(passages: list[str]) -> Tables:
    """Every table of ``passages`` with the (1-based) passage it is in, in passage order."""
    return [(n, *table) for n, text in enumerate(passages, start=1) for table in _tables(text)]


def _best_row(tables: Tables, readings: list[tuple[set[str], set[str]]], years: list[str], min_label_cover: float,
              *, skip_generic: bool = False) -> tuple[int, list[str], list[str]] | None:
    """(passage, row, figures) of the row ``readings`` name most fully (:func:`_named_by`, at least
    ``min_label_cover`` of its label) with a figure under each of ``years``; ties go to the row whose section the
    question names more fully (:func:`_section_said`), then to the row met first (the better passage, then the
    earlier table and row). ``skip_generic``: never a row labelled only "Total" or "Net"."""
    best = None
    for n, cols, rows, sections in tables:
        by_year = {y: i for i, y in cols.items()}
        if not all(y in by_year for y in years):
            continue
        for row, section in zip(rows, sections):
            label = row[0] if row else ""
            if skip_generic and set(content_stems(label)) <= _GENERIC:
                continue
            cover, whole, own, common = _named_by(label, readings)
            if common == 0 or cover < min_label_cover or (values := _figures(row, by_year, years)) is None:
                continue
            key = (cover, whole, own, common, _section_said(section, readings))
            if best is None or key > best[0]:
                best = (key, n, row, values)
    return best[1:] if best else None


def _one_unit(passages: list[str], ns) -> bool:
    """Whether the tables of passages ``ns`` (1-based) state one unit: rows of a segment table in thousands and
    a statement in millions are not added or divided."""
    return len({table_unit(passages[n - 1], "") for n in set(ns)}) <= 1


def table_calculation(question: str, passages: list[str], min_label_cover: float = 0.6,
                      row_names: Mapping[str, Sequence[str]] | None = None) -> TableCalc | None:
    """The formula for ``question`` from a row of the tables in ``passages``, or None (see the module doc);
    ``row_names``: other names of line items (see :func:`asked_words`)."""
    op = _operation(question)
    if op is None or _DEFINES.search(question):
        return None
    years = _years(question, op)
    if len(years) < 2 or (op != "average" and len(years) != 2):
        return None
    found = _best_row(_all_tables(passages), asked_words(question, row_names), years, min_label_cover)
    if found is None:
        return None
    n, row, values = found
    # A change asked for in percent is a percentage change - unless the row is itself in percent (a margin's
    # change is its difference in points).
    in_percent = op == "change" and bool(_IN_PERCENT.search(question))
    row_op = "percent_change" if in_percent and not any("%" in c for c in row) else op
    return TableCalc(_formula(row_op, years, values), n, row[0], years, row_op, list(map(_as_written, values)))


def _ratio_row(names: Sequence[str], tables: Tables, years: list[str],
               min_label_cover: float) -> tuple[int, str, list[str]] | None:
    """The row labelled by one of ``names`` (it holds the whole name, which makes at least ``min_label_cover``
    of its label's content words: "Total net sales" for "net sales", not "Net sales by segment in Europe")
    with a figure under each of ``years``, among ``tables`` (passage, columns, rows): (passage, label,
    figures). The fullest match wins, then the better-ranked passage, then the earlier row."""
    readings = [(set(content_stems(name)),) * 2 for name in names]  # the name is both what is said and needed
    best: tuple[float, float, int, int, tuple[int, str, list[str]]] | None = None
    for n, cols, rows, _ in tables:
        by_year = {y: i for i, y in cols.items()}
        if not all(y in by_year for y in years):
            continue
        for r, row in enumerate(rows):
            cover, whole, _, common = _named_by(row[0] if row else "", readings)
            if common == 0 or cover < min_label_cover or (values := _figures(row, by_year, years)) is None:
                continue
            key = (cover, whole, -n, -r)
            if best is None or key > best[:4]:
                best = (*key, (n, row[0].strip(), values))
    return best[4] if best else None


_PERCENT = re.compile(r"%|\bper\s?cent|\bpercentage\b", re.IGNORECASE)


def ratio_calculation(question: str, passages: list[str], ratios: Mapping[str, object],
                      min_label_cover: float = 0.6) -> TableCalc | None:
    """A ratio the question asks for by name (``ratios``: name -> settings with ``of``, ``per`` and
    ``percent``, see ``answers.ratios``) from two rows of the tables in ``passages``: in one year, averaged
    over the years it names, or its change between two years (in points); None when the question names no
    ratio, defines its own, asks for another form, or a row or a year's figure is missing."""
    low = " ".join(question.lower().split())
    said = [k for k in sorted(ratios, key=len, reverse=True) if _says(k, low)]
    if not said or _DEFINES.search(question):
        return None
    spec = ratios[said[0]]
    op = _operation(question)
    if op == "percent_change":
        return None
    years = _years(question, op or "average")
    if (op is None and len(years) != 1) or (op == "change" and len(years) != 2) or (op == "average" and len(years) < 2):
        return None
    tables = _all_tables(passages)
    if _ratio_row([said[0]], tables, years, min_label_cover) is not None and not _PERCENT.search(question):
        # The statement has a row of that name ("Gross margin" - an amount): the question may well ask for it.
        return None
    num = _ratio_row(spec.of, tables, years, min_label_cover)
    den = _ratio_row(spec.per, tables, years, min_label_cover)
    if num is None or den is None:
        return None
    if not _one_unit(passages, (num[0], den[0])):
        return None
    by_year = {y: (a, b) for y, a, b in zip(years, num[2], den[2])}
    parts = [f"{by_year[y][0]} / {by_year[y][1]}" for y in years]
    if op == "change":
        body = f"({parts[1]} - {parts[0]})"
    elif op == "average":
        body = f"(({' + '.join(f'({p})' for p in parts)}) / {len(parts)})"
    else:
        body = f"({parts[0]})"
    formula = f"{body} * 100" if spec.percent else body
    row = f"{num[1]} / {den[1]}"
    return TableCalc(formula, num[0], row, years, f"ratio_{op}" if op else "ratio",
                     list(map(_as_written, num[2] + den[2])), cited=sorted({num[0], den[0]}), unitless=True)


# The formula a question states for its own metric: "DPO is defined as: 365 * (average accounts payable between
# FY2016 and FY2017) / (FY2017 COGS + change in inventory between FY2016 and FY2017)". It runs to the end of
# its sentence (a full stop not inside a figure), a semicolon or a question mark.
_DEFINITION = re.compile(r"\b(?:defined|calculated|computed)\s+as\s*:?\s*(?P<body>.+?)\s*(?:\.(?!\d)|;|\?|$)",
                         re.IGNORECASE | re.DOTALL)
# Operators: + * / ( ) always; a minus only between spaces ("PP&E, net" and "year-end" are words).
_DEF_TOKEN = re.compile(r"(\s[-\u2013\u2212]\s|[+*/\u00d7\u00f7()])")
_CONSTANT = re.compile(r"^\d+(?:\.\d+)?$")
_TERM_AVERAGE = re.compile(r"^\s*(?:the\s+)?(?:average|avg\.?|mean)\b", re.IGNORECASE)
_TERM_CHANGE = re.compile(r"^\s*(?:the\s+)?(?:change|increase|decrease|difference)\s+(?:in|of)\b", re.IGNORECASE)


def _definition_terms(body: str) -> list[str] | None:
    """The definition as tokens: operators, parentheses, constants and the line items between them (None when
    it has no operator or no line item: a definition in words is not a formula)."""
    tokens = [t.strip() for t in _DEF_TOKEN.split(body) if t.strip()]
    tokens = ["*" if t == "\u00d7" else "/" if t == "\u00f7" else "-" if t in ("\u2013", "\u2212") else t for t in tokens]
    ops = [t for t in tokens if t in "+-*/" and len(t) == 1]
    terms = [t for t in tokens if t not in "+-*/()" and not _CONSTANT.match(t)]
    return tokens if ops and terms else None


def _term_row(term: str, tables: Tables, default_year: str | None,
              row_names: Mapping[str, Sequence[str]] | None, min_label_cover: float):
    """One line item of a definition as a formula part: "FY2017 COGS" is that row's cell under 2017, "average
    accounts payable between FY2016 and FY2017" the mean of its two cells, "change in inventory between ..."
    the later minus the earlier; a term that names no year takes the question's one year. Returns (formula
    part, passage, label, years, figures) or None when the term's form, years or row is not clear."""
    op = "average" if _TERM_AVERAGE.match(term) else "change" if _TERM_CHANGE.match(term) else "value"
    years = _years(term, op)  # a range ("FY2015 - FY2017") is every year in it, for an average
    if op == "value" and not years and default_year:
        years = [default_year]
    if (op == "value" and len(years) != 1) or (op == "change" and len(years) != 2) or (op == "average" and len(years) < 2):
        return None
    found = _best_row(tables, asked_words(term, row_names), years, min_label_cover, skip_generic=True)
    if found is None:
        return None
    n, row, values = found
    part = values[0] if op == "value" else f"({_formula(op, years, values)})"
    return part, n, row[0].strip(), years, values


def defined_calculation(question: str, passages: list[str], row_names: Mapping[str, Sequence[str]] | None = None,
                        min_label_cover: float = 0.6) -> TableCalc | None:
    """A metric the question defines by a formula of line items ("X is defined as: 365 * (average accounts
    payable between FY2016 and FY2017) / (FY2017 COGS + change in inventory between FY2016 and FY2017)"),
    evaluated over rows of the tables in ``passages``: each line item is read as :func:`table_calculation`
    reads a row (``row_names`` included), under the years its term names. None when the question defines
    nothing, a term is not one line item (a row, its average, its change) or has no row, the rows' tables
    state different units, or the result's unit is not clear (a sum of an amount and a ratio).

    The result is unitless (``unitless``) when the formula divides amounts by amounts - doubling every line
    item leaves it unchanged - and in the tables' unit when it is an amount; a percent asked for of a unitless
    metric whose definition has no "100" is shown in percent."""
    m = _DEFINITION.search(question)
    if not m or not (tokens := _definition_terms(m.group("body"))):
        return None
    outside = question[:m.start()] + " " + question[m.end():]
    named_years = sorted(set(_YEAR.findall(outside)))
    default_year = named_years[0] if len(named_years) == 1 else None
    tables = _all_tables(passages)
    parts, scaled, labels, years, cells, cited = [], [], [], set(), [], set()
    for i, token in enumerate(tokens):
        if token in "+-*/()" or _CONSTANT.match(token):
            parts.append(token)
            scaled.append(token)
            continue
        found = _term_row(token, tables, default_year, row_names, min_label_cover)
        if found is None:
            return None
        part, n, label, term_years, values = found
        if tokens[i - 1:i] == ["("] and tokens[i + 1:i + 2] == [")"] and part.startswith("("):
            part = part[1:-1]  # "(average ...)" is bracketed already
        parts.append(part)
        scaled.append(f"(2 * {part})")
        labels.append(label)
        years.update(term_years)
        cells.extend(map(_as_written, values))
        cited.add(n)
    if not _one_unit(passages, cited):
        return None
    formula = " ".join(parts).replace("( ", "(").replace(" )", ")")
    try:
        base = evaluate(formula).value
        ratio = evaluate(" ".join(scaled)).value / base
    except (FormulaError, ZeroDivisionError):
        return None
    if abs(ratio - 1) < 1e-9:
        unitless = True
    elif abs(ratio - 2) < 1e-9:
        unitless = False
    else:
        return None  # neither an amount nor a ratio of amounts
    if unitless and _PERCENT.search(outside) and "100" not in m.group("body"):
        formula = f"({formula}) * 100"
    return TableCalc(formula, min(cited), ", ".join(dict.fromkeys(labels)), sorted(years), "defined", cells,
                     cited=sorted(cited), unitless=unitless)


# A share of a whole the question names by its two line items, in one year: "What was the employee termination
# costs as a proportion of total costs in 2018?", "What is the percentage of audit fees in total fees in 2019?".
# The second form reads "in / out of / among / over / to" as the split only before a whole that says "total":
# elsewhere "in" is as likely part of the line item's name ("the percentage of cash in banks").
_SHARE_KIND = r"(?P<kind>percentage|percent|proportion|share|ratio|fraction)"
_SHARE_AS = re.compile(rf"^\W*(?:what|how\s+much)\s+(?:is|was|were|are)\s+(?:the\s+)?(?:value\s+of\s+)?(?P<part>.+?)\s+"
                       rf"as\s+an?\s+{_SHARE_KIND}\s+of\s+(?P<whole>.+?)\s*\??\s*$", re.IGNORECASE)
_SHARE_OF = re.compile(rf"^\W*what\s+(?:is|was|were|are)\s+the\s+{_SHARE_KIND}\s+of\s+(?P<part>.+?)\s+"
                       rf"(?:in|out\s+of|among|over|to|of)\s+(?P<whole>(?:the\s+)?total\b.+?)\s*\??\s*$", re.IGNORECASE)
_SHARE_PERCENT = {"percentage", "percent", "share"}  # a proportion, ratio or fraction is asked for as a plain ratio


def share_calculation(question: str, passages: list[str], row_names: Mapping[str, Sequence[str]] | None = None,
                      min_label_cover: float = 0.6) -> TableCalc | None:
    """A line item's share of another in the one year the question names ("X as a percentage of Y in 2019",
    "the proportion of X over total Y in 2018"): X's cell over Y's, times 100 when a percentage or share is
    asked for. Each line item is read as :func:`table_calculation` reads a row (``row_names`` included), never a
    row labelled only "Total" or "Net". None when the question has neither form, names no single year (or asks
    for a change or an average of shares), either row is missing, both name the same row, or the two rows'
    tables state different units."""
    m = _SHARE_AS.match(question) or _SHARE_OF.match(question)
    if m is None or _DEFINES.search(question) or _operation(question) is not None:
        return None
    years = sorted(set(_YEAR.findall(question)))
    if len(years) != 1:
        return None
    tables = _all_tables(passages)
    found = [_best_row(tables, asked_words(m.group(side), row_names), years, min_label_cover, skip_generic=True)
             for side in ("part", "whole")]
    if None in found:
        return None
    (n_part, part, (a,)), (n_whole, whole, (b,)) = found
    if (n_part, part[0]) == (n_whole, whole[0]):
        return None  # the question's two names read as one row: which is the part is not clear
    if re.search(r"\band\b", m.group("part"), re.I) and not re.search(r"\band\b|&", part[0], re.I):
        return None  # "X and Y as a percentage of ...": a sum of two rows, not the one row found
    if not _one_unit(passages, (n_part, n_whole)):
        return None
    formula = f"{a} / {b}" + (" * 100" if m.group("kind").lower() in _SHARE_PERCENT else "")
    return TableCalc(formula, n_part, f"{part[0].strip()} / {whole[0].strip()}", years, "share",
                     [_as_written(a), _as_written(b)], cited=sorted({n_part, n_whole}), unitless=True)


@dataclass
class TableCell:
    """One cell a question asks for: a line item's figure for one year."""

    n: int  # the passage (1-based) the row is in
    row: str  # the row's label
    year: str
    cell: str  # the figure as the table writes it
    section: str = field(default="", compare=False)  # the line heading the row in its table, if any

    @property
    def label(self) -> str:
        """The row as an answer names it: with its section when that says more than the row ("Earnings per
        share: Diluted" - "Diluted" alone does not say diluted what), else the row's own label. Not a section of
        more than 8 words or with a digit: in PDF text that is mostly a stray line of prose or of another table
        (finance dev chunks: 30 of ~420 sections), and its figures would read as the answer's."""
        if (self.section and len(self.section.split()) <= 8 and not any(ch.isdigit() for ch in self.section)
                and not set(content_stems(self.section)) <= set(content_stems(self.row))):
            return f"{self.section.rstrip(': ')}: {self.row}"  # "Total assets:" heads its rows with a colon
        return self.row


# Questions that ask which item, why, or whether - not for a line item's figure - even when they name a year
# and a row ("Which segment had the highest revenue in 2022?", "Among operating, investing and financing
# activities, which brought in the most cash?").
_NOT_A_FIGURE = re.compile(r"^\s*(?:why|when|where|is|are|was there|were there|does|do|did|has|have|can|could|"
                           r"will|would|should)\b|\b(?:which|who|whom)\b", re.IGNORECASE)
# A question that defines its own metric ("DPO is defined as: 365 * (average accounts payable ...) / ...")
# asks for that metric, not for one of its parts that a fixed form or a single cell would give.
_DEFINES = re.compile(r"\b(?:defined|calculated|computed)\s+as\b|[=*]", re.IGNORECASE)


# Row labels made only of these words ("Total", "Net", "Other") do not say which line item they total: a
# question's "total assets" matched the "Total" row of another table (finance dev, an older chunking).
_GENERIC = set(content_stems("total totals subtotal net other amount"))


def _marks(text: str) -> set[str]:
    """The short tokens that tell rows apart where their words agree ("Customer A", "Tier 2", "Class B"),
    which content words leave out; footnote markers ("Total debt (2)") are not among them."""
    return set(re.findall(r"(?<![\w.,$])[A-Z0-9]{1,2}(?![\w.,%])", re.sub(r"\(\w{1,3}\)", " ", text)))


def table_value(question: str, passages: list[str], min_label_cover: float = 0.6,
                row_names: Mapping[str, Sequence[str]] | None = None) -> TableCell | None:
    """The cell a "what was <line item> in <year>" question asks for, read off a row of the tables in
    ``passages``, or None. Only for questions of no arithmetic form (those are :func:`table_calculation`'s)
    that name exactly one year and a row label: at least ``min_label_cover`` of the label's content words are
    the question's (as :func:`table_calculation` reads rows, ``row_names`` included). Ties go to the row the
    question names most fully, then to the row whose section it names more fully (:func:`_section_said`), then
    to the better-ranked passage."""
    if _operation(question) is not None or _NOT_A_FIGURE.search(question) or _DEFINES.search(question):
        return None
    years = sorted(set(_YEAR.findall(question)))
    if len(years) != 1:
        return None
    year = years[0]
    readings = asked_words(question, row_names)
    asked = _marks(question)
    best: tuple[float, float, bool, int, tuple[int, float], int, TableCell] | None = None
    for n, text in enumerate(passages, start=1):
        for cols, rows, sections in _tables(text):
            at = [i for i, y in cols.items() if y == year]
            if len(at) != 1:
                continue  # no column for the year, or several (values in two currencies): not one cell
            col = at[0]
            for row, section in zip(rows, sections):
                if set(content_stems(row[0] if row else "")) <= _GENERIC:
                    continue  # "Total" names no line item of its own: in the wrong table it is the wrong figure
                cover, whole, own, common = _named_by(row[0], readings)
                if common == 0 or cover < min_label_cover or col >= len(row):
                    continue
                if not _marks(row[0]) <= asked:
                    continue  # "Customer A" is not the row for a question about Customer B
                key = (cover, whole, own, common, _section_said(section, readings), -n)
                if best is None or key > best[:6]:
                    best = (*key, TableCell(n, row[0].strip(), year, row[col].strip(), section.strip()))
    # The row the question names decides; an empty cell there ("-") is no answer, not a reason to read the
    # next-best row.
    return best[6] if best and _number(best[6].cell) is not None else None


def _formula(op: str, years: list[str], values: list[str]) -> str:
    by_year = dict(zip(years, values))
    if op == "average":
        return f"({' + '.join(values)}) / {len(values)}"
    old, new = by_year[min(years)], by_year[max(years)]
    if op == "change":
        return f"{new} - {old}"
    return f"(({new} - {old}) / {old}) * 100"


def reads_tables(shape: str, settings) -> bool:
    """Whether :func:`read_tables` reads anything for a question routed to ``shape`` (``settings``: the pack's
    AnswerSettings): a calculation, or - with ``table_lookup`` - one line item's cell."""
    return shape == "calculate" or (settings.table_lookup and shape in ("free", "extract"))


def read_tables(question: str, texts: list[str], shape: str, settings) -> tuple[TableCalc | None, TableCell | None]:
    """(calculation, cell) read off the tables of ``texts`` for a question routed to ``shape``, with the pack's
    ``settings`` (an AnswerSettings: row_names, ratios, table_lookup): for 'calculate', a row that is the figure
    itself first, else a ratio the pack defines from its two rows, else a metric the question defines by a
    formula of line items (the first two leave a defining question alone), else one line item's share of another
    in one year; for 'free' and 'extract', one line
    item's cell. The one place this order is decided (compose and bench/table_lookup.py use it)."""
    if not reads_tables(shape, settings):
        return None, None
    if shape == "calculate":
        return (table_calculation(question, texts, row_names=settings.row_names)
                or ratio_calculation(question, texts, settings.ratios)
                or defined_calculation(question, texts, row_names=settings.row_names)
                or share_calculation(question, texts, row_names=settings.row_names)), None
    return None, table_value(question, texts, row_names=settings.row_names)
