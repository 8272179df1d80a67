"""Numbers as documents and answers write them: "1,234.5", "(1,234)", "$5 million", "12.5%".

One parser for the whole product: the grounding check compares an answer's figures with its sources
(:mod:`app.answers.grounding`), and the evaluation compares them with gold answers
(:mod:`app.evaluation.metrics`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

SCALE_WORDS: dict[str, float] = {
    "thousand": 1e3,
    "k": 1e3,
    "million": 1e6,
    "mn": 1e6,
    "m": 1e6,
    "billion": 1e9,
    "bn": 1e9,
    "b": 1e9,
    "trillion": 1e12,
    "tn": 1e12,
}

_CURRENCY = r"(?:US\$|[$€£¥₹])"
# Thousands-grouped numbers first so "1,234.5" is one number; plain runs next; then ".5".
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(
    rf"""
    (?<![\w.])                      # not glued to a word or a decimal point: skip "FY2022", "Q2"
    (?P<sign>[-+\u2212\u2013])?      # sign right before: ASCII minus/plus, Unicode minus, en dash
    (?:{_CURRENCY}\s*)?              # "$5", "$ 65,646", "US$5"
    (?:
        # accounting negative, only when the parentheses hold just the number: "(1,234)", "(0.5%)"
        \(\s*(?:{_CURRENCY}\s*)?(?P<paren>{_UNSIGNED})\s*(?P<ppct>%)?\s*\)
      | (?P<sign2>[-\u2212])?(?P<num>{_UNSIGNED})      # plain, or "$-5"
    )
    (?!\d)                           # never stop inside a digit run ("1,2345" is not "1,234")
    (?:\s*(?P<pct>%|percent\b|per\s+cent\b))?
    (?:\s*(?P<scale>thousand|trillion|billion|million|tn|bn|mn|k|m|b)\b)?
    """,
    re.VERBOSE | re.IGNORECASE,
)


@dataclass(frozen=True)
class Number:
    value: float
    # A bare 4-digit integer between 1900 and 2100 (no currency, decimals, %, scale, sign or
    # grouping): almost always a year. Kept so numeric matching can ignore years when the gold
    # answer has real quantities ("from 36.8% in FY 2021 to 34.6% in FY2022").
    year_like: bool


def scan_numbers(text: str) -> list[Number]:
    found: list[Number] = []
    for m in _NUMBER_RE.finditer(unicodedata.normalize("NFKC", text)):
        raw = m.group("paren") or m.group("num")
        value = float(raw.replace(",", ""))
        negative = bool(m.group("paren")) or bool(m.group("sign2"))
        if m.group("sign") and m.group("sign") != "+":
            negative = not negative  # "-(5)" is odd, but flipping is the literal reading
        is_pct = bool(m.group("pct") or m.group("ppct"))
        scale = m.group("scale")
        if scale and not is_pct:
            value *= SCALE_WORDS[scale.lower()]
        if negative:
            value = -value
        plain = m.group(0).strip()
        year_like = bool(re.fullmatch(r"\d{4}", plain)) and 1900 <= value <= 2100
        found.append(Number(value, year_like))
    return found


def parse_numbers(text: str) -> list[float]:
    """All numbers in ``text``, in order, as floats.

    Handles thousands separators ("1,234.5" -> 1234.5), accounting negatives in parentheses
    ("(1,234)" -> -1234.0), signs ("-5", "−5"), percentages ("12.5%" or "12.5 percent" -> 12.5,
    the number as written), currency signs ("$", "US$", "€", "£", "¥", "₹"), and a scale word
    right after the number multiplying it (thousand/k, million/m/mn, billion/bn/b, trillion/tn):
    "$(1,234.5) million" -> -1234500000.0.

    Digits glued to letters are not numbers ("FY2022", "Q2", "COVID-19"'s "19" is kept since a
    hyphen separates it), because they are labels rather than quantities; dates like "8/26/14"
    come out as their parts.
    """
    return [n.value for n in scan_numbers(text)]
