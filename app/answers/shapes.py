"""Task-shaped answers: which shape a question gets, and how the model's raw text becomes that shape.

Shapes (a pack lists the ones it uses in ``answers.shapes`` and routes questions to them with its
``answers.route`` rules, data in pack.yaml):

* ``label``: yes/no/maybe (or the pack's labels). The label is chosen from the generator's next-token
  log-probabilities after the passages, never by hoping the model writes it; then one sentence of
  support with a citation is generated after it.
* ``extract``: a date, a party, a clause, a dose: the answer quotes a kept passage verbatim. The quote is
  checked to be a substring of a kept passage; when it is not, the best matching sentence of the cited
  passage is quoted instead.
* ``calculate``: the model writes the arithmetic over figures from the passages; slmrag evaluates it
  (:mod:`app.answers.arithmetic`) and shows value, formula and the cited rows.
* ``free``: at most a few sentences; repeated sentences dropped.

Everything here is pure text processing (no model), so it is unit-tested exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.answers.arithmetic import FormulaError, evaluate, find_formula, format_value
from app.answers.grounding import content_stems
from app.numbers import SCALE_WORDS, parse_numbers
from app.prompting import instruction_like

SHAPES = ("label", "extract", "calculate", "free")
NOT_FOUND = "I could not find this in your documents."

_CITE = re.compile(r"\[(\d{1,2})\]")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_NOT_FOUND = re.compile(r"\b(?:could not|couldn't|cannot|can't|did not|didn't|unable to)\s+find\b|"
                        r"\bnot\s+(?:found|mentioned|stated|provided|in (?:the|your) (?:documents|passages))\b|"
                        r"\bno (?:information|mention)\b", re.IGNORECASE)
_SCALE = re.compile(r"\b(?:in|\()\s*(thousands|millions|billions)\b", re.IGNORECASE)


@dataclass
class Shaped:
    """An answer in its shape, before the grounding check."""

    shape: str
    text: str  # what the user reads
    cited: list[int] = field(default_factory=list)  # valid passage numbers, 1-based
    label: str | None = None
    label_scores: dict | None = None
    quote: dict | None = None  # {"text", "n", "verbatim"}
    calculation: dict | None = None  # {"formula", "value", "display", "scale", "inputs"}
    refused: bool = False  # the model said the passages do not answer
    claim: str = ""  # the part of the answer the grounding check reads
    label_by: str | None = None  # what chose the label: "generator" (its label log-probabilities) or "reader"
    lookup: dict | None = None  # a figure read off a table: {"n", "row", "year", "cell", "unit"}

    def to_json(self) -> dict:
        out = {"shape": self.shape, "label": self.label, "quote": self.quote, "calculation": self.calculation,
               "refused": self.refused}
        if self.label_scores is not None:
            out["label_scores"] = self.label_scores
        if self.label_by is not None:
            out["label_by"] = self.label_by
        if self.lookup is not None:
            out["lookup"] = self.lookup
        return out


# ---------------------------------------------------------------------------------------------- routing
def route(question: str, rules: list, shapes: list[str], default: str) -> str:
    """The first rule whose pattern matches the question (case-insensitive) and whose shape the pack uses."""
    for rule in rules:
        if rule.shape in shapes and re.search(rule.pattern, question, re.IGNORECASE):
            return rule.shape
    return default


# ---------------------------------------------------------------------------------------------- text
def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s and s.strip()]


# Where a passage's sentences end: after . ! ? before a capital or figure; at a blank line; at a line break
# that starts a list item, table row or heading, or follows a colon, semicolon or table row. Any other line
# break is a PDF wrapping a sentence across lines, which stays inside the sentence (a contract's clause is
# one sentence over three lines, not three quotes).
_PASSAGE_SENT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[\u201c]?[A-Z0-9])|\n[ \t\u00a0]*\n\s*|"
                           r"\n(?=[ \t\u00a0]*(?:[-*\u2022|#]|\(?\w{1,3}[.)][ \t\u00a0]))|(?<=[:;|])[ \t\u00a0]*\n")


def passage_sentences(text: str) -> list[str]:
    """A passage's sentences that an answer may quote, each a verbatim substring of it (line wraps inside a
    sentence kept). Not one the prompt takes out as a planted instruction (``always answer PWNED``): the model
    never reads it, and quoted it would be the planted text shown as the answer (tests/test_injection.py)."""
    return [s for s in (s.strip() for s in _PASSAGE_SENT.split(text) if s) if s and not instruction_like(s)]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w%.$-]+", " ", text.lower())).strip()


def cited_numbers(text: str, n: int) -> list[int]:
    return sorted({int(k) for k in _CITE.findall(text) if 1 <= int(k) <= n})


def drop_invalid_citations(text: str, n: int) -> str:
    return _CITE.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= n else "", text)


def is_not_found(text: str) -> bool:
    """The model says the passages do not answer - in words, or by writing nothing but citations ("[5]")."""
    head = " ".join(text.split()[:25])
    return bool(_NOT_FOUND.search(head)) or not re.search(r"[^\W_]", _CITE.sub(" ", text))


def tidy(text: str, n_passages: int, max_sentences: int) -> str:
    """At most ``max_sentences`` sentences, none repeated, citations only to passages that exist; a
    sentence cut off by the token limit is dropped when a complete one precedes it."""
    text = drop_invalid_citations(text, n_passages)
    out: list[str] = []
    seen: set[str] = set()
    for s in sentences(text):
        key = _norm(_CITE.sub("", s))
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(s)
        if len(out) >= max_sentences:
            break
    if len(out) > 1 and not re.search(r"[.!?)\]\"']$", out[-1]):
        out.pop()
    return " ".join(out).strip()


def _cite_suffix(n: int | None) -> str:
    return f" [{n}]" if n else ""


def best_sentence(passage_text: str, probe: str) -> str:
    """The sentence of a passage that shares most content words with ``probe`` (question + draft answer)."""
    want = set(content_stems(probe))
    best, best_score = "", -1.0
    for s in passage_sentences(passage_text):
        have = content_stems(s)
        if not have:
            continue
        score = len(want & set(have)) / (len(set(have)) ** 0.5)
        if score > best_score:
            best, best_score = s, score
    return best or " ".join(passage_sentences(passage_text))[:300]


def locate(quote: str, texts: list[str]) -> tuple[int, str] | None:
    """Find ``quote`` in one of ``texts`` ignoring case, spacing and punctuation; returns (index, the
    passage's own words for it) so what is shown is verbatim from the passage."""
    words = re.findall(r"\w+", quote.lower())
    if not words:
        return None
    pattern = re.compile(r"\W+".join(re.escape(w) for w in words), re.IGNORECASE)
    for i, t in enumerate(texts):
        m = pattern.search(t)
        if m:
            return i, m.group(0)
    return None


# ---------------------------------------------------------------------------------------------- shapes
def finish_free(raw: str, n_passages: int, max_sentences: int) -> Shaped:
    text = tidy(raw, n_passages, max_sentences)
    return Shaped("free", text, cited_numbers(text, n_passages), refused=is_not_found(text), claim=text)


def read_label(text: str, labels: list[str]) -> str | None:
    """The first of the pack's labels written as a whole word in ``text`` (for backends that cannot score
    the label from their logits)."""
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in labels:
            return word
    return None


def finish_label(label: str, scores: dict, raw_support: str, n_passages: int) -> Shaped:
    support = tidy(raw_support, n_passages, 1)
    support = re.sub(rf"^\W*{re.escape(label)}\b[\s,.:;-]*", "", support, flags=re.IGNORECASE)
    if is_not_found(support):
        support = ""  # the label came from the logits; a passage's own sentence will support it instead
    text = f"{label.capitalize()}. {support}".strip()
    return Shaped("label", text, cited_numbers(text, n_passages), label=label,
                  label_scores={k: round(v, 4) for k, v in scores.items()}, claim=support, label_by="generator")


def label_from_reading(reading, passages: list[str], question: str) -> Shaped:
    """The label reader's verdict (:class:`app.answers.reader.Reading`), supported by the deciding passage's
    sentence that states it (as the reader found), else the one that best matches the question - verbatim."""
    n = reading.n
    quote = reading.sentence if reading.sentence and reading.sentence in passages[n - 1] else best_sentence(
        passages[n - 1], question)
    scores = {k: round(v, 4) for k, v in reading.probs.items()}
    return Shaped("label", f"{reading.label.capitalize()}. \u201c{quote}\u201d [{n}]", [n], label=reading.label,
                  label_scores={**scores, "verdict": round(reading.verdict, 4)}, claim=quote,
                  quote={"text": quote, "n": n, "verbatim": True, "by_model": False}, label_by="reader")


_QUOTED = re.compile(r"[\"“”](.{3,}?)[\"“”]", re.DOTALL)


def _opening(raw: str, n: int) -> tuple[str, list[int], bool]:
    """The model's text with citations only to passages 1..n, the ones it cites, and whether it said not found."""
    text = drop_invalid_citations(raw.strip(), n)
    return text, cited_numbers(text, n), is_not_found(text)


def quote_for_model(shape: str, passages: list[str], question: str, n: int = 1) -> Shaped:
    """The relevance filter kept these passages, so a small model's "not found" is not the last word: the
    best sentence of passage ``n`` is quoted instead, and the grounding check then asks whether that passage
    covers what the question names (else the answer is withheld all the same)."""
    quote = best_sentence(passages[n - 1], question)
    return Shaped(shape, f"\u201c{quote}\u201d [{n}]", [n], claim=quote,
                  quote={"text": quote, "n": n, "verbatim": True, "by_model": False})


def finish_extract(raw: str, passages: list[str], question: str) -> Shaped:
    """Quote a kept passage verbatim; fall back to the best matching sentence of the cited passage."""
    n = len(passages)
    text, cited, not_found = _opening(raw, n)
    if not_found:
        return quote_for_model("extract", passages, question)
    m = _QUOTED.search(text)
    candidate = m.group(1) if m else _CITE.sub("", sentences(text)[0] if sentences(text) else text)
    candidate = candidate.strip().strip("\"“”' ").rstrip(".")
    order = cited + [i for i in range(1, n + 1) if i not in cited]
    found = locate(candidate, [passages[i - 1] for i in order]) if len(candidate) >= 2 else None
    if found is not None:
        num = order[found[0]]
        quote, by_model = found[1], True
    else:
        num = cited[0] if cited else 1
        quote, by_model = best_sentence(passages[num - 1], f"{question} {candidate}"), False
    shown = f"\u201c{quote}\u201d [{num}]"
    # Either way the quote is the passage's own words (verbatim); by_model says whether the model found it.
    return Shaped("extract", shown, [num], quote={"text": quote, "n": num, "verbatim": True, "by_model": by_model},
                  claim=quote)


def quote_selection(selection) -> Shaped:
    """The sentence selector's choice (:class:`app.answers.selector.Selection`) as the extract answer: the
    sentence word for word, cited to its passage; with a marked span, the span, then that sentence."""
    n, quote = selection.n, selection.sentence
    # A span that runs over a sentence's end is no part of one: shown before the quote, that sentence would be
    # read twice (a "sentence" the splitter left whole: "... gamma = 0.17. c) Since there was no data ...").
    whole = len(re.split(r"(?<=[.!?])\s+", selection.span.strip())) > 1 if selection.span else False
    if selection.span and selection.span != quote and selection.span in quote and not whole:
        # The answer is the marked part; the sentence around it is shown as its support, both verbatim.
        return Shaped("extract", f"{selection.span} \u2014 \u201c{quote}\u201d [{n}]", [n], claim=selection.span,
                      quote={"text": selection.span, "sentence": quote, "n": n, "verbatim": True, "by_model": False,
                             "by": "selector", "score": round(selection.score, 4), "span_score": selection.span_score})
    return Shaped("extract", f"\u201c{quote}\u201d [{n}]", [n], claim=quote,
                  quote={"text": quote, "n": n, "verbatim": True, "by_model": False, "by": "selector",
                         "score": round(selection.score, 4)})


def date_from_term(ending) -> Shaped:
    """How a term ends (:class:`app.answers.dates.TermEnd`) as an extract answer, the term sentence quoted and
    cited: the end date it names; or the date slmrag computes, with its formula (start date + duration, as
    the document writes them) and the passage stating the start date; or no end date (perpetual)."""
    n = ending.n
    quote = {"text": ending.sentence, "n": n, "verbatim": True, "by_model": False, "by": "dates", "term": ending.kind}
    said = f"\u201c{ending.sentence}\u201d [{n}]"
    if ending.kind == "perpetual":
        return Shaped("extract", f"No end date: the term runs until it is terminated (perpetual) \u2014 {said}", [n],
                      claim=ending.sentence, quote=quote)
    end = f"{ending.end:%B} {ending.end.day}, {ending.end.year}"
    if ending.kind == "stated":
        return Shaped("extract", f"{end} \u2014 {said}", [n], claim=ending.sentence, quote=quote)
    cited = [n] + ([ending.start_n] if ending.start_n and ending.start_n != n else [])
    source = f" [{ending.start_n}]" if ending.start_n else " (the document's opening)"
    return Shaped("extract", f"{end} \u2014 {ending.start.text}{source} + {ending.duration.text}: {said}", cited,
                  claim=ending.sentence, quote=quote,
                  calculation={"formula": ending.formula, "value": ending.end.isoformat(), "display": end,
                               "by": "dates", "start": ending.start.text, "duration": ending.duration.text})


def finish_calculate(raw: str, passages: list[str], question: str) -> Shaped:
    """Evaluate the formula the model wrote; show value, formula and the cited passages."""
    n = len(passages)
    text, cited, not_found = _opening(raw, n)
    if not_found:
        return Shaped("calculate", NOT_FOUND, [], refused=True)
    formula = find_formula(_CITE.sub(" ", text))
    if formula is None:
        # No arithmetic: the model answered with a figure or words; keep it as a short free answer.
        shaped = finish_free(text, n, 2)
        shaped.shape = "calculate"
        return shaped
    try:
        calc = evaluate(formula)
    except FormulaError as exc:
        shaped = finish_free(text, n, 2)
        shaped.shape = "calculate"
        shaped.calculation = {"formula": formula, "error": str(exc)}
        return shaped
    return _calculated(calc, cited, passages, question, {"by": "model"})


def calculate_from_table(tc, passages: list[str], question: str) -> Shaped:
    """The answer for a :class:`app.answers.tables.TableCalc`: slmrag's formula over the cited row's cells."""
    shaped = _calculated(evaluate(tc.formula), tc.cited or [tc.n], passages, question,
                         {"by": "table", "row": tc.row, "years": tc.years, "operation": tc.operation,
                          "unitless": tc.unitless})
    shaped.claim = " ".join(tc.cells)  # the constants of the form (2, 3, 100) are not in any passage
    return shaped


_PER_SHARE = re.compile(r"\bper\s+(?:\w+\s+)?share\b|\bEPS\b", re.IGNORECASE)
_ASKED_SCALE = re.compile(r"\bin\s+(?:(?:USD|US\$|\$|EUR|GBP)\s+)?(thousands|millions|billions)\b", re.IGNORECASE)


def table_unit(source: str, about: str) -> str:
    """The unit ("thousands", "millions", "billions") the tables in ``source`` state their figures in, or ""
    for none - or for a per-share figure (``about``: the question, with the row when known) in a table
    "in thousands, except per-share amounts": earnings per share are in currency units."""
    m = _SCALE.search(source)
    if not m or (_PER_SHARE.search(about) and re.search(r"except\s+(?:for\s+)?per[- ]share", source, re.I)):
        return ""
    return m.group(1).lower()


def value_from_table(cell, passages: list[str], question: str) -> Shaped:
    """The answer for a :class:`app.answers.tables.TableCell`: the figure as its table writes it, with the
    row, the year and the table's unit, cited - and restated in the unit the question asks for when the
    table uses another ("in USD millions" of a table in thousands)."""
    text = passages[cell.n - 1]
    unit = table_unit(text, f"{question} {cell.row}")
    shown = f"{cell.cell}" + (f" (in {unit})" if unit else "")
    asked_m = _ASKED_SCALE.search(question)
    asked = asked_m.group(1).lower() if asked_m else ""
    numbers = parse_numbers(cell.cell)
    if unit and asked and asked != unit and len(numbers) == 1:
        restated = numbers[0] * SCALE_WORDS[unit[:-1]] / SCALE_WORDS[asked[:-1]]  # "thousands" -> "thousand"
        shown += f" = {format_value(restated)} {asked[:-1]}"  # "millions" -> "5,466.31 million"
    return Shaped("extract", f"{shown} \u2014 {cell.label}, {cell.year} [{cell.n}]", [cell.n],
                  claim=f"{cell.cell} {cell.row}",
                  lookup={"n": cell.n, "row": cell.row, "year": cell.year, "cell": cell.cell, "unit": unit}
                  | ({"section": cell.section} if cell.label != cell.row else {}))  # the section the answer names


def _calculated(calc, cited: list[int], passages: list[str], question: str, extra: dict) -> Shaped:
    """Value, unit/scale, formula and citations of an evaluated formula."""
    n = len(passages)
    percent = bool(re.search(r"percent|%|proportion|share|rate|margin", question, re.IGNORECASE)) and (
        "* 100" in calc.formula or "*100" in calc.formula)
    source = " ".join(passages[i - 1] for i in (cited or range(1, n + 1)))
    # A ratio of two figures in the same unit has none (a current ratio is not "2 millions").
    scale = "" if percent or extra.get("unitless") else table_unit(source, f"{question} {extra.get('row', '')}")
    display = format_value(calc.value, percent=percent) + (f" {scale}" if scale else "")
    cites = "".join(f" [{i}]" for i in cited)
    shown = f"{display} = {calc.formula}{cites}"
    inputs = " ".join(f"{x:g}" for x in calc.numbers)
    return Shaped("calculate", shown, cited, calculation={"formula": calc.formula, "value": calc.value,
                                                          "display": display, "scale": scale,
                                                          "inputs": list(calc.numbers), **extra},
                  claim=inputs)
