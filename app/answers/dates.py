"""The date a term ends, computed: a contract says "for a period of three (3) years" from its Effective
Date, and the question asks on what date the term expires.

Like a finance 'calculate' answer, the arithmetic is slmrag's, shown with its inputs, so a lawyer checks a
start date and a duration, each cited, rather than trusting a small model's calendar. A term sentence
that states its end date itself ("shall expire on December 31, 2006") needs no computing: it is quoted.

Conventions: a term of N years from a start date ends on the same day N years later (the anniversary);
a month count keeps the day of the month, clamped to the month's last day. Contracts differ (some end
the day before the anniversary): the answer shows both inputs so the reader can tell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

_MONTHS = ("january february march april may june july august september october november december").split()
_MONTH = "|".join(_MONTHS) + r"|sept\.?|" + "|".join(m[:3] + r"\.?" for m in _MONTHS if len(m) > 3)
_DAY = r"(\d{1,2})\s*(?:st|nd|rd|th|t\s?h)?"
_DATE = re.compile(
    rf"\b(?:(?P<m1>{_MONTH})\s+{_DAY.replace('(', '(?P<d1>', 1)},?\s+(?P<y1>\d{{4}})"
    rf"|{_DAY.replace('(', '(?P<d2>', 1)}\s+(?:day\s+of\s+)?(?P<m2>{_MONTH}),?\s+(?:in\s+the\s+year\s+)?(?P<y2>\d{{4}})"
    rf"|(?P<m3>\d{{1,2}})/(?P<d3>\d{{1,2}})/(?P<y3>\d{{4}}))\b",
    re.IGNORECASE)
_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split())}
_WORD_NUMBERS.update({"a": 1, "an": 1, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
                      "ninety": 90, "eighteen": 18, "twenty-four": 24, "thirty-six": 36})
_NUMBER = r"\d{1,3}|" + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True))
_DURATION = re.compile(rf"\b(?P<w>{_NUMBER})\s*(?:\(\s*(?P<d>\d{{1,3}})\s*\)\s*)?-?\s*(?P<u>year|month|week|day)s?\b",
                       re.IGNORECASE)
# A sentence about how long the agreement runs (not a notice period or a payment term).
_TERM = re.compile(r"\b(term|period|continue|remain|in (full )?force|in effect|duration|expire)", re.IGNORECASE)
_END_CUE = re.compile(r"\b(through|until|till|ending|ends? on|expir\w*|terminat\w* on)\b", re.IGNORECASE)
_PERPETUAL = re.compile(r"\b(in perpetuity|perpetual(ly)?|indefinite(ly)?|(unless and )?until terminated)\b",
                        re.IGNORECASE)
# A sentence that counts years or months ("until the end of the fifteenth (15th) Contract Year, and thereafter
# until terminated") has an end, though no duration this module reads: it is not called perpetual.
_SPAN_WORDS = re.compile(r"\b(years?|months?)\b", re.IGNORECASE)
_NOT_TERM = re.compile(r"\b(notice|prior to|before the (end|expiration)|after (the |any )?(termination|expiration)|"
                       r"following (the |any )?(termination|expiration)|survive|days? after receipt|invoice|payment)",
                       re.IGNORECASE)
# Where a contract says when it starts: an Effective Date, "dated as of", "made ... this 5th day of".
_START = re.compile(r"effective|commenc|dated|entered\s+into|made\b|as\s+of|execution", re.IGNORECASE)


@dataclass(frozen=True)
class Found:
    value: object  # a date, or (count, unit) for a duration
    text: str  # as the document writes it
    start: int


def find_dates(text: str) -> list[Found]:
    """The calendar dates written in ``text`` (March 15, 2019; 15th day of March, 2019; 3/15/2019)."""
    out = []
    for m in _DATE.finditer(text):
        g = m.groupdict()
        try:
            if g["m1"]:
                d = date(int(g["y1"]), _month(g["m1"]), int(g["d1"]))
            elif g["m2"]:
                d = date(int(g["y2"]), _month(g["m2"]), int(g["d2"]))
            else:
                d = date(int(g["y3"]), int(g["m3"]), int(g["d3"]))
        except ValueError:  # 31 February: not a date
            continue
        out.append(Found(d, m.group(0), m.start()))
    return out


def find_durations(text: str) -> list[Found]:
    """The lengths of time written in ``text``: (count, unit) with unit year, month, week or day."""
    out = []
    for m in _DURATION.finditer(text):
        n = int(m.group("d")) if m.group("d") else _count(m.group("w"))
        if n:
            out.append(Found((n, m.group("u").lower()), m.group(0), m.start()))
    return out


def add(start: date, count: int, unit: str) -> date:
    """``start`` plus ``count`` units: years and months keep the day (clamped to the month's end)."""
    if unit in ("week", "day"):
        return start + timedelta(days=count * (7 if unit == "week" else 1))
    months = start.month - 1 + count * (12 if unit == "year" else 1)
    y, m = start.year + months // 12, months % 12 + 1
    last = (date(y + (m == 12), m % 12 + 1, 1) - timedelta(days=1)).day
    return date(y, m, min(start.day, last))


@dataclass(frozen=True)
class TermEnd:
    kind: str  # "computed" (start + duration), "stated" (the sentence names the end date), "perpetual"
    n: int  # the kept passage whose sentence states the term
    sentence: str
    end: date | None = None
    start: Found | None = None  # computed: the date the term runs from
    start_n: int | None = None  # the kept passage that states it (1-based); None: the document's opening
    duration: Found | None = None

    @property
    def formula(self) -> str:
        return f"{self.start.text} + {self.duration.text}" if self.kind == "computed" else ""


def term_end(ranked, passages, *, top: int = 5, min_score: float = 0.5) -> TermEnd | None:
    """How the term ends, from the best of the selector's ``ranked`` sentences
    (:class:`app.answers.selector.Selection`, best first) that it finds likely to answer (``min_score``)
    and that speak of the term: an end date the sentence names ("through December 31, 2012"), else a
    duration counted from a date in that sentence or the start date its document states (a kept passage
    of that document, then its opening), else no end ("in perpetuity", "until terminated"). None when no
    such sentence is among the ``top``: the answer is then the selector's sentence, as for any question."""
    for s in ranked[:top]:
        if s.score < min_score:
            break
        if not _TERM.search(s.sentence):
            continue
        dates = find_dates(s.sentence)
        cue = _END_CUE.search(s.sentence)
        stated = [d for d in dates if cue and d.start > cue.start()]
        if stated:
            return TermEnd("stated", s.n, s.sentence, end=stated[0].value)
        durations = [d for d in find_durations(s.sentence)
                     if not _NOT_TERM.search(s.sentence[max(0, d.start - 60):d.start + len(d.text) + 40])]
        if durations:
            p = passages[s.n - 1]
            start, start_n = (dates[0], s.n) if dates else _document_start(p, passages)
            if start is not None:
                count, unit = durations[0].value
                try:
                    end = add(start.value, count, unit)
                except (ValueError, OverflowError):  # past the calendar's year 9999: no date to show
                    continue
                return TermEnd("computed", s.n, s.sentence, end=end, start=start, start_n=start_n,
                               duration=durations[0])
        if _PERPETUAL.search(s.sentence) and not _SPAN_WORDS.search(s.sentence):
            return TermEnd("perpetual", s.n, s.sentence)
    return None


def _document_start(p, passages) -> tuple[Found | None, int | None]:
    """The date ``p``'s document starts from: one written beside "effective", "dated", "made", "as of"...,
    in a kept passage of the same document first (best first), then in the document's opening."""
    sources = [(n, q.text) for n, q in enumerate(passages, 1) if q.doc_id == p.doc_id] + [(None, p.opening or "")]
    for n, text in sources:
        for d in find_dates(text):
            if _START.search(text[max(0, d.start - 120):d.start]):
                return d, n
    return None, None


def _month(name: str) -> int:
    key = name.lower().rstrip(".")[:3]
    return next(i for i, m in enumerate(_MONTHS, 1) if m.startswith(key))


def _count(word: str) -> int:
    w = word.lower()
    return int(w) if w.isdigit() else _WORD_NUMBERS.get(w, 0)
