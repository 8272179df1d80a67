"""Redaction of personal identifiers before chunks are stored (the medical pack turns it on).

Pattern-based and deliberately conservative about *what* it recognises, so it does not eat clinical
content: e-mail addresses, phone numbers, dates of birth (a date after a DOB-like label), record numbers
(a number after MRN / record / patient ID labels), and person names after a label ("Patient:",
"Name:") or a title (Mr, Mrs, Ms, Dr). A replacement keeps the kind, e.g. ``[EMAIL]``, so the text still
reads sensibly to the model.
"""

from __future__ import annotations

import re

# A name: a capitalised word, an optional middle initial ("Q." - a lone capital, so it can never eat the
# first letter of the surname), then up to two more capitalised words, all on one line (a name never runs
# on into the next line's label, e.g. "MRN").
_NAME = r"[A-Z][a-zA-Z'\-]+(?:[ \t]+[A-Z]\.?(?![a-zA-Z'\-]))?(?:[ \t]+[A-Z][a-zA-Z'\-]+){0,2}"

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("EMAIL", re.compile(r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b")),
    ("DOB", re.compile(
        r"(?i)(\b(?:DOB|D\.O\.B\.?|date of birth|born(?: on)?)\s*[:#]?\s*)"
        r"(\d{1,4}[/\-.]\d{1,2}[/\-.]\d{1,4}|\d{1,2}\s+[A-Za-z]{3,9}\.?\s+\d{4}|[A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{4})")),
    ("MRN", re.compile(
        r"(?i)(\b(?:MRN|medical record(?: number| no\.?)?|record (?:number|no\.?)|patient id|hospital number|NHS number)"
        r"\s*[:#]?\s*)([A-Z]{0,3}[\-\s]?\d[\d\-\s]{3,14}\d)")),
    ("PHONE", re.compile(
        r"(?<![\w/.])(?:\+\d{1,3}[\s\-.]?)?(?:\(\d{2,4}\)[\s\-.]?|\d{2,4}[\s\-.])\d{3,4}[\s\-.]\d{3,4}(?![\w/])")),
    ("NAME", re.compile(r"((?:\bPatient(?: name)?|\bName|\bNext of kin|\bContact)\s*:\s*)(" + _NAME + r")")),
    ("NAME", re.compile(r"(\b(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)(" + _NAME + r")")),
]


def redact(text: str) -> tuple[str, int]:
    """Return the redacted text and how many identifiers were replaced."""
    total = 0
    for label, pattern in PATTERNS:
        def repl(m: re.Match[str], label=label) -> str:
            # Patterns with a label group keep the label ("DOB: ") and replace only the value.
            return (m.group(1) if m.re.groups >= 2 else "") + f"[{label}]"

        text, n = pattern.subn(repl, text)
        total += n
    return text, total
