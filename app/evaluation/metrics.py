"""Scoring functions for the slmrag evaluation sets (``/work/shared/data/*/questions.jsonl``).

Everything here is pure (no I/O, no model calls) and uses only the standard library, so the
scores are cheap to recompute, easy to test by hand, and identical on every machine.

Three families of metrics:

* retrieval: did a retrieved passage hold the gold evidence? (:func:`passage_holds_evidence`,
  then :func:`first_hit_rank`, :func:`recall_at_k`, :func:`reciprocal_rank`);
* answers: label match for PubMedQA, numeric match for FinanceBench / TAT-QA, SQuAD-style
  token F1 otherwise (:func:`answer_correct`);
* aggregation: :func:`mean`, :func:`percentile`.

Record fields used (see ``/work/shared/data/README.md``): ``answer``, ``evidence``,
``evidence_spans`` (optional), ``doc``, ``page`` / ``pages`` (optional, 1-based PDF pages),
``source`` and ``scale`` (TAT-QA).
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from difflib import SequenceMatcher
from typing import Any, TypedDict

from app.numbers import SCALE_WORDS, parse_numbers, scan_numbers

__all__ = [
    "AnswerScore",
    "alnum_key",
    "answer_correct",
    "evidence_spans",
    "exact_match",
    "extract_label",
    "first_hit_rank",
    "is_refusal",
    "mean",
    "normalize_text",
    "numbers_match",
    "parse_numbers",
    "passage_holds_evidence",
    "percentile",
    "question_pages",
    "recall_at_k",
    "reciprocal_rank",
    "token_f1",
    "tokens",
]

# ---------------------------------------------------------------------------------------------
# Text normalisation
# ---------------------------------------------------------------------------------------------

_WS_RE = re.compile(r"\s+")
# `[^\W_]` = a Unicode letter or digit. We want "naïve" to stay one token rather than splitting
# on the accented letter, which an ASCII-only [a-z0-9] class would do.
_TOKEN_RE = re.compile(r"[^\W_]+")


def normalize_text(s: str) -> str:
    """Lowercase, Unicode NFKC and collapse all whitespace runs to one space (stripped).

    NFKC first so that ligatures ("ﬁ"), full-width digits and non-breaking spaces that PDF and
    HTML extractors emit compare equal to their plain forms; whitespace is collapsed because
    chunkers and extractors disagree about line breaks, not about words.
    """
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", s).lower()).strip()


def alnum_key(s: str) -> str:
    """Only the lowercase letters and digits of ``s``, concatenated.

    Different PDF extractors disagree on spaces, hyphenation, table separators and punctuation,
    but rarely on the letters and digits themselves, so this key lets a dataset's extraction of a
    page be compared with ours.
    """
    return "".join(ch for ch in normalize_text(s) if ch.isalnum())


def tokens(s: str) -> list[str]:
    """Word tokens: the runs of letters/digits in the normalised text ("U.S. $1,234" ->
    ["u", "s", "1", "234"])."""
    return _TOKEN_RE.findall(normalize_text(s))


# ---------------------------------------------------------------------------------------------
# Retrieval: does a passage hold the evidence?
# ---------------------------------------------------------------------------------------------

# Evidence longer than this only needs to share a run of this many characters with a passage:
# a chunk boundary can cut a long gold snippet, and 80 characters (about a sentence) is far too
# long to be shared by accident within one document.
_OVERLAP_CHARS = 80


def _basename(path: str) -> str:
    # Split on both separators: sources may be POSIX paths, Windows paths or bare file names.
    return re.split(r"[\\/]", path.strip())[-1]


def evidence_spans(question: Mapping[str, Any]) -> list[str]:
    """All gold snippets of a question: ``evidence_spans`` plus ``evidence``, deduplicated,
    in order, empty ones dropped (the README says ``evidence`` is the first span, but do not
    rely on it)."""
    spans: list[str] = []
    for span in [*(question.get("evidence_spans") or []), question.get("evidence") or ""]:
        if isinstance(span, str) and span.strip() and span not in spans:
            spans.append(span)
    return spans


def question_pages(question: Mapping[str, Any]) -> set[int]:
    """The 1-based PDF pages that hold the evidence (``page`` and/or ``pages``); empty if
    unknown. Values are coerced to int because hand-edited JSON sometimes stores "54"."""
    raw: list[Any] = list(question.get("pages") or [])
    if question.get("page") is not None:
        raw.append(question["page"])
    pages: set[int] = set()
    for p in raw:
        try:
            pages.add(int(p))
        except (TypeError, ValueError):
            continue  # a malformed page must not crash a whole evaluation run
    return pages


def _shares_run(a: str, b: str, min_len: int) -> bool:
    """True if ``a`` and ``b`` share a common substring of at least ``min_len`` characters.

    The answer is decided by difflib's exact longest-common-substring search, as specified; the
    n-gram set in front is only a fast, exact rejection (any shared run of >= min_len chars
    contains a shared min_len-gram), because SequenceMatcher is O(len(a) * len(b)) in pure Python
    and is called for every (question, retrieved passage) pair.
    """
    if min_len <= 0:
        return True
    if len(a) < min_len or len(b) < min_len:
        return False
    grams = {a[i : i + min_len] for i in range(len(a) - min_len + 1)}
    if not any(b[i : i + min_len] in grams for i in range(len(b) - min_len + 1)):
        return False
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size >= min_len


def _token_recall(needle: str, haystack: str) -> float:
    """Fraction of ``needle``'s tokens found in ``haystack``, counted with multiplicity (a table
    that repeats "2,018" three times needs it three times), so a chunk holding only part of a
    long evidence scores proportionally lower."""
    need = Counter(tokens(needle))
    total = sum(need.values())
    if total == 0:
        return 0.0
    have = Counter(tokens(haystack))
    return sum(min(n, have[t]) for t, n in need.items()) / total


def passage_holds_evidence(
    passage_text: str,
    passage_source: str,
    passage_page: int | None,
    question: Mapping[str, Any],
    *,
    fuzzy_threshold: float = 0.6,
) -> bool:
    """Whether one retrieved passage "holds the evidence" of ``question``.

    Rule (following the scoring hints in ``/work/shared/data/README.md``):

    1. The passage must come from ``question['doc']``, compared by file basename (so
       ``/corpora/legal/x.pdf`` matches ``x.pdf``). Anything else is a miss.
    2. PDFs (``.pdf``): the dataset's ``evidence`` is *its own* text extraction and will not match
       ours byte for byte, so

       a. if the question has ``page``/``pages`` and the passage's page is known, it is a hit iff
          ``passage_page`` is one of those pages;
       b. otherwise (no gold page, or the passage carries no page) fall back to fuzzy text
          matching against any evidence span: ``alnum_key(span)`` is a substring of
          ``alnum_key(passage)``, or the token recall of the span's tokens in the passage is
          ``>= fuzzy_threshold``.
    3. Every other document (``.txt``, ``.md``, ``.html``, ...): the evidence is a verbatim
       substring of the file, so compare ``normalize_text`` forms against each evidence span; a
       hit if any span

       a. is contained in the passage, or
       b. contains the passage (a small chunk lying inside a long evidence), or
       c. shares a run of at least ``min(len(span), 80)`` characters with the passage (longest
          common substring, via ``difflib.SequenceMatcher(..., autojunk=False)``), which covers
          a chunk boundary cutting through a long span.
    """
    doc = question.get("doc")
    if not doc or _basename(str(passage_source)) != _basename(str(doc)):
        return False
    spans = evidence_spans(question)

    if _basename(str(doc)).lower().endswith(".pdf"):
        pages = question_pages(question)
        if pages and passage_page is not None:
            return int(passage_page) in pages
        passage_key = alnum_key(passage_text)
        for span in spans:
            span_key = alnum_key(span)
            # Guard the empty key: "" is a substring of everything.
            if span_key and span_key in passage_key:
                return True
            if _token_recall(span, passage_text) >= fuzzy_threshold:
                return True
        return False

    passage_norm = normalize_text(passage_text)
    if not passage_norm:
        return False
    for span in spans:
        span_norm = normalize_text(span)
        if not span_norm:
            continue
        if span_norm in passage_norm or passage_norm in span_norm:
            return True
        if _shares_run(passage_norm, span_norm, min(len(span_norm), _OVERLAP_CHARS)):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Ranking metrics over a list of per-rank hit flags (index 0 = rank 1)
# ---------------------------------------------------------------------------------------------


def first_hit_rank(hits: Sequence[bool]) -> int | None:
    """1-based rank of the first hit, or None if no passage holds the evidence."""
    for i, hit in enumerate(hits):
        if hit:
            return i + 1
    return None


def recall_at_k(hits: Sequence[bool], k: int) -> float:
    """1.0 if any of the first ``k`` passages is a hit, else 0.0 (the "success@k" form of recall,
    the usual choice when each question has one gold location)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return 1.0 if any(hits[:k]) else 0.0


def reciprocal_rank(hits: Sequence[bool]) -> float:
    """1 / rank of the first hit, 0.0 if none; averaged over questions this is MRR."""
    rank = first_hit_rank(hits)
    return 0.0 if rank is None else 1.0 / rank


def mean(xs: Iterable[float | bool | None]) -> float | None:
    """Arithmetic mean, skipping None; None if nothing is left.

    None entries are skipped rather than counted as 0 because they mean "not scored" (e.g. CUAD
    "Yes" answers, which :func:`answer_correct` leaves to retrieval), and None rather than 0.0 or
    NaN is returned for an empty input so that a missing score cannot pass for a measured one.
    """
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def percentile(xs: Iterable[float | None], p: float) -> float | None:
    """The ``p``-th percentile (0..100) with linear interpolation between closest ranks (the same
    as ``numpy.percentile``'s default), skipping None; None for an empty input."""
    if not 0 <= p <= 100:
        raise ValueError(f"p must be within [0, 100], got {p}")
    vals = sorted(float(x) for x in xs if x is not None)
    if not vals:
        return None
    pos = (len(vals) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------------------
# Answer metrics: SQuAD-style F1 / EM
# ---------------------------------------------------------------------------------------------

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def _squad_normalize(s: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation, drop articles, fix whitespace.

    Punctuation is *deleted*, not turned into spaces, as in the official SQuAD script, so that
    "1,234" and "1234" or "U.S." and "US" compare equal. Unicode punctuation (curly quotes, en
    dashes) counts too, because model output and PDF text are full of it.
    """
    s = unicodedata.normalize("NFKC", s).lower()
    s = "".join(
        ch
        for ch in s
        if ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    )
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the bag of normalised tokens.

    If either side normalises to nothing, F1 is 1.0 when both do and 0.0 otherwise (the SQuAD 2.0
    convention), since "no tokens" cannot be partially right.
    """
    pred = _squad_normalize(prediction).split()
    ref = _squad_normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> bool:
    """Equality after the SQuAD normalisation used by :func:`token_f1`."""
    return _squad_normalize(prediction) == _squad_normalize(gold)


# ---------------------------------------------------------------------------------------------
# Labels (PubMedQA)
# ---------------------------------------------------------------------------------------------

_LABELS = ("yes", "no", "maybe")


def extract_label(answer_text: str) -> str | None:
    """The yes/no/maybe label of a free-text answer, or None.

    If the answer *starts* with one of the words (after markdown and punctuation, which
    :func:`tokens` drops: "**Yes**, because ..." -> "yes"), that word wins, because a model that
    leads with a verdict means it; otherwise the first of the words anywhere in the text ("The
    answer is maybe." -> "maybe"). A leading label is also the first label in the text, so both
    rules are one scan over the tokens. Whole tokens only, so "not", "nor" and "yesterday" never
    count.
    """
    for word in tokens(answer_text):
        if word in _LABELS:
            return word
    return None


# ---------------------------------------------------------------------------------------------
# Numbers (FinanceBench, TAT-QA)
# ---------------------------------------------------------------------------------------------

# TAT-QA `scale` field -> multiplier for the gold value. "percent" keeps the value as is: both
# the gold and a model state percentages as e.g. 12.5, not 0.125.
_TATQA_SCALES: dict[str, float] = {
    "": 1.0,
    "thousand": 1e3,
    "million": 1e6,
    "billion": 1e9,
    "percent": 1.0,
}

def _quantities(text: str) -> list[float]:
    """Numbers for answer matching: years are dropped when other numbers exist, because
    FinanceBench answers mention fiscal years next to the actual figures and a prediction that
    merely repeats "2022" must not count as a numeric match (nor can a year scaled by 1e6 be
    allowed to hit "$2,018mn"). If the numbers are all years, the years are the answer."""
    nums = scan_numbers(text)
    quantities = [n.value for n in nums if not n.year_like]
    return quantities if quantities else [n.value for n in nums]


def numbers_match(
    prediction: str,
    gold: str,
    *,
    scale: str | None = None,
    rel_tol: float = 0.01,
) -> bool:
    """True if any number in ``prediction`` matches any number in ``gold`` within ``rel_tol``.

    Gold candidates: each gold value as written (scale words in the text already applied), and
    times the TAT-QA ``scale`` ('', 'thousand', 'million', 'billion', 'percent'), because TAT-QA
    stores "21234" with scale "thousand" for 21,234,000. For scale 'percent' the ratio form
    (value / 100) is also accepted ("-48.18%" vs "-0.4818").

    Prediction candidates: each predicted value and that value times and divided by 1e3, 1e6 and
    1e9, because people restate scales ("$21.2 million" vs "21,234 thousand", "1,291" when the
    table is in millions).

    (The restatements already cover the thousand/million/billion scales; the scale factor is
    kept so that the rule stays right if the restatement set is ever narrowed.)

    Signs are ignored (absolute values compared): "decreased by 48.18%" is a correct answer to a
    gold "-48.18%", and the sign of a change is usually carried by words, not by a minus.

    Years are ignored on both sides when the gold has other numbers (see :func:`_quantities`).
    """
    gold_values = _quantities(gold)
    pred_values = _quantities(prediction)
    if not gold_values or not pred_values:
        return False
    key = (scale or "").strip().lower()
    # Also accept the short scale words ("k", "mn", ...) so callers need not translate them.
    factor = _TATQA_SCALES.get(key, SCALE_WORDS.get(key))
    if factor is None:
        # Fail loudly: silently treating an unknown scale as 1 would under-count correct answers.
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(_TATQA_SCALES)}")

    gold_cands = {abs(g) for g in gold_values} | {abs(g) * factor for g in gold_values}
    if key == "percent":
        gold_cands |= {abs(g) / 100.0 for g in gold_values}
    restate = (1.0, 1e3, 1e-3, 1e6, 1e-6, 1e9, 1e-9)
    pred_cands = {abs(p) * f for p in pred_values for f in restate}
    # abs_tol only rescues exact zeros ("0%" vs "0"); rel_tol alone can never match 0 with 0.0.
    return any(
        math.isclose(p, g, rel_tol=rel_tol, abs_tol=1e-12) for p in pred_cands for g in gold_cands
    )


# ---------------------------------------------------------------------------------------------
# Per-question answer scoring
# ---------------------------------------------------------------------------------------------


class AnswerScore(TypedDict):
    """Result of :func:`answer_correct`.

    kind: "label" (PubMedQA yes/no/maybe), "numeric" (finance answers with numbers), "text"
    (token F1), or "evidence" (CUAD "Yes": not judged from the answer text; ``correct`` is None).
    f1 / em: SQuAD token F1 and exact match of the raw prediction against ``question['answer']``,
    reported for every kind so they can be compared across sets.
    """

    kind: str
    correct: bool | None
    f1: float
    em: bool


_TEXT_F1_THRESHOLD = 0.5
CITATION = re.compile(r"\[\d{1,2}\]")  # an answer's "[n]": never part of what it states
_NUMERIC_SOURCES = frozenset({"financebench", "tat-qa"})


def answer_correct(prediction: str, question: Mapping[str, Any]) -> AnswerScore:
    """Score a generated answer against a question record.

    * ``pubmedqa``: kind "label"; correct iff :func:`extract_label` of the prediction equals the
      gold label.
    * ``cuad`` with gold answer "Yes": kind "evidence", correct None. Per the data README such an
      answer only says that the clause exists, so it is judged by the retrieved evidence.
    * ``financebench`` / ``tat-qa`` whose gold answer contains a number: kind "numeric";
      correct iff :func:`numbers_match` (with the question's ``scale``).
    * everything else: kind "text"; correct iff token F1 >= 0.5 (lenient, because generated
      answers are sentences while gold answers are short spans).
    """
    gold = str(question.get("answer", ""))
    source = str(question.get("source", "")).lower()
    # A citation marker is not a figure: "[2]" matched a gold "$2,018mn" read as 2 billion (as task_score
    # found before; this metric still counted it).
    prediction = CITATION.sub(" ", prediction)
    f1 = token_f1(prediction, gold)
    em = exact_match(prediction, gold)

    if source == "pubmedqa":
        predicted = extract_label(prediction)
        ok = predicted is not None and predicted == gold.strip().lower()
        return {"kind": "label", "correct": ok, "f1": f1, "em": em}
    if source == "cuad" and gold.strip().lower() == "yes":
        return {"kind": "evidence", "correct": None, "f1": f1, "em": em}
    if source in _NUMERIC_SOURCES and parse_numbers(gold):
        scale = question.get("scale")
        ok = numbers_match(prediction, gold, scale=scale if isinstance(scale, str) else None)
        return {"kind": "numeric", "correct": ok, "f1": f1, "em": em}
    return {"kind": "text", "correct": f1 >= _TEXT_F1_THRESHOLD, "f1": f1, "em": em}


# ---------------------------------------------------------------------------------------------
# Abstention
# ---------------------------------------------------------------------------------------------

# Phrases by which an answer declines to answer: slmrag's own abstention line ("I could not find
# this in your documents"), the LangChain tutorial prompt's "I don't know", and the usual variants.
_REFUSAL_RE = re.compile(
    r"\b(?:i\s+)?(?:could\s*n[o']t|can\s*n[o']t|cannot|am\s+unable\s+to|was\s+unable\s+to)\s+"
    r"(?:find|answer|determine|locate)\b"
    r"|\b(?:do\s+not|don't|dont)\s+know\b"
    r"|\bnot\s+enough\s+information\b"
    r"|\b(?:does|do)\s*n[o']t\s+(?:contain|provide|include|give|mention)\s+(?:enough\s+|any\s+|sufficient\s+)?"
    r"information\b"
    r"|\b(?:no|insufficient)\s+information\s+(?:is\s+)?(?:available|provided|given|about|on|to)\b"
    r"|\bunable\s+to\s+(?:find|answer|determine)\b"
)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\n+")


def is_refusal(answer_text: str) -> bool:
    """Whether a generated answer declines to answer (an abstention in words).

    Only the first sentence is checked, so an answer that gives a verdict and later remarks that
    "no information is provided about X" still counts as an answer; an empty answer is a refusal.
    """
    text = normalize_text(answer_text.replace("\u2019", "'"))
    text = text.lstrip("*_#>- ")
    if not text:
        return True
    first = _SENTENCE_END_RE.split(text, maxsplit=1)[0]
    return bool(_REFUSAL_RE.search(first))
