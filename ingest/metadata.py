"""Document-level metadata extracted at ingest, used to boost matching documents at query time.

Kept general (no dataset-specific rules): the years a document is *about* (from its file name and title
first, they are the most reliable, then the most frequent years in its opening pages) and the distinctive
words of its name (company or party names usually sit there).
"""

from __future__ import annotations

import re
from collections import Counter

_YEAR = re.compile(r"(?<!\d)(19[5-9]\d|20[0-4]\d)(?!\d)")
_STOP = {"the", "and", "of", "inc", "corp", "co", "ltd", "llc", "agreement", "pdf", "txt", "md", "html",
         "ex", "exhibit", "dated", "excerpt", "report", "annual", "earnings", "plc", "group", "company"}


def document_metadata(file_name: str, title: str, opening_text: str) -> dict:
    head = f"{file_name} {title}"
    name_years = sorted({int(y) for y in _YEAR.findall(head)})
    text_years = Counter(int(y) for y in _YEAR.findall(opening_text))
    years = name_years or [y for y, _ in text_years.most_common(2)]
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z&']{2,}", re.sub(r"([a-z])([A-Z])", r"\1 \2", file_name))]
    names = [w for w in words if w not in _STOP][:6]
    return {"years": years, "name_words": names}
