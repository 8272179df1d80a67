"""Grounded or silent: is an answer supported by the passages it cites?

A check that fits 2 cores and needs no model: the answer's content words and numbers are looked up in the
text of the passages it cites. Words match on a short stem (``recommends`` ~ ``recommended``), numbers by
value (``1,496.5`` = ``1496.5``). A word of the *question* that the answer repeats but the cited passages
never mention weighs double: that is the signature of an answer that restates the question's premise
("the protocol recommends aspirin for atrial fibrillation") over passages about something else.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

from app.numbers import parse_numbers

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_CITE = re.compile(r"\[\d{1,2}\]")
# Function words and the words every answer uses about itself; they say nothing about support.
_STOP = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either few for from further had has have
having he her here hers him his how i if in into is it its itself just may me might more most must my
neither no nor not now of off on once only or other our out over own per same shall she should so some
such than that the their them then there these they this those through to too under until up upon very
was we were what when where which while who whom why will with within without would you your yes
according answer based cite cited documents document found information passage passages provided
question states stated text mentioned shows show given says said one two three
much many need needed needs use used uses using define defines defined describe described kind type
""".split())


def stem(word: str) -> str:
    w = word.lower().strip("'-")
    for suffix in ("ations", "ation", "ings", "ing", "ied", "ies", "ed", "es", "s", "ly"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            break
    return w[:7]


def content_stems(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(_CITE.sub(" ", text)) if w.lower() not in _STOP and len(w) > 2]


@dataclass
class Support:
    score: float  # 0..1: weighted share of the answer's content words and numbers found in the cited text
    checked: int  # how many words and numbers were looked up
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"score": round(self.score, 4), "checked": self.checked, "missing": self.missing[:10]}


def _number_found(x: float, pool: list[float]) -> bool:
    # By magnitude: a table writes a negative figure as "(34,627)", and an answer that quotes it as 34,627
    # (e.g. inside "34,627 - 38,640") states a figure the passage holds.
    x = abs(x)
    for y in (abs(v) for v in pool):
        if abs(x - y) <= 1e-6 * max(1.0, abs(y)):
            return True
        if abs(x * 100 - y) <= 1e-6 * max(1.0, abs(y)) or abs(x - y * 100) <= 1e-6 * max(1.0, abs(x)):
            return True  # 0.47 vs 47 (%)
    return False


def lexical_support(answer: str, cited_texts: list[str], question: str = "", *,
                    weight: Callable[[str], float] | None = None) -> Support:
    """How much of ``answer`` the ``cited_texts`` contain (see the module docstring). ``weight``: each word's
    weight by its stem instead (:meth:`WordRarity.weight`), a number's then the answer's average word's."""
    body = _CITE.sub(" ", answer)
    source = " ".join(cited_texts)
    have = set(content_stems(source))
    q_stems = set(content_stems(question))
    weight_total = 0.0
    weight_found = 0.0
    missing: list[str] = []
    seen: set[str] = set()
    for w in _WORD.findall(body):
        if w.lower() in _STOP or len(w) <= 2:
            continue
        s = stem(w)
        if s in seen:
            continue
        seen.add(s)
        w_s = weight(s) if weight is not None else 2.0 if s in q_stems else 1.0
        weight_total += w_s
        if s in have:
            weight_found += w_s
        else:
            missing.append(w)
    # a wrong figure is the costliest error an analyst can be shown: it weighs as a question word
    per_number = 2.0 if weight is None else (weight_total / len(seen) if seen else 1.0)
    pool = parse_numbers(source)
    for x in parse_numbers(body):
        if x in (1.0, 2.0, 3.0) and re.search(r"\[\s*%g\s*\]" % x, answer):
            continue  # a citation number, not a claim
        weight_total += per_number
        if _number_found(x, pool):
            weight_found += per_number
        else:
            missing.append(f"{x:g}")
    checked = len(seen) + len(parse_numbers(body))
    score = weight_found / weight_total if weight_total else 1.0
    return Support(score, checked, missing)


class WordRarity:
    """How rare each content word (:func:`stem`) is among an index's documents: BM25's idf over documents,
    ``log(1 + (N - df + 0.5) / (df + 0.5))`` for a word ``df`` of the ``N`` documents hold; a word no document
    holds weighs most. Counted once per index snapshot (:meth:`app.assistant.IndexView.word_rarity`)."""

    def __init__(self, documents: int, frequency: dict[str, int]):
        self.documents, self.frequency = documents, frequency

    @classmethod
    def of_documents(cls, texts) -> "WordRarity":
        """From an iterable of texts, one per document."""
        frequency: dict[str, int] = {}
        n = 0
        for text in texts:
            n += 1
            for s in set(content_stems(text)):
                frequency[s] = frequency.get(s, 0) + 1
        return cls(n, frequency)

    def weight(self, word_stem: str) -> float:
        df = self.frequency.get(word_stem, 0)
        return math.log(1.0 + (self.documents - df + 0.5) / (df + 0.5))


def question_coverage(question: str, scope: str, rarity: WordRarity | None = None) -> Support:
    """How much of what ``question`` names ``scope`` holds: the share of its distinct content words (and
    numbers) found there. Each counts once; with ``rarity`` (``grounding.question_words: rarity``) a word
    counts by its rarity in the index, so a contract's party names, which no other indexed contract holds,
    outweigh "liability" and "breach", which all of them do; a number then weighs as the question's average
    word."""
    return lexical_support(question, [scope], question, weight=rarity.weight if rarity is not None else None)


def passage_naming(passage, opening_words: int = 0) -> str:
    """The words that name a passage's document: its name and section heading (a question names "the
    Riverbend protocol"; the passage under that title need not repeat it) and, when the pack says so, the
    first words of its document (a question names a contract by its parties, which the contract names once,
    at its start, not in the clause that answers). With the passage's text it is the passage's *scope*, what
    the question's words are looked up in."""
    from app.filters.cross_encoder import doc_label

    opening = " ".join(passage.opening.split()[:opening_words]) if opening_words else ""
    return f"{doc_label(passage.name)} {passage.heading} {opening}"


def best_coverage(question: str, passages: list, opening_words: int = 0, rarity: WordRarity | None = None) -> float:
    """The largest :func:`question_coverage` of ``question`` by one passage's scope (:func:`passage_naming` and
    its text); 0.0 with no passage."""
    return max((question_coverage(question, f"{passage_naming(p, opening_words)} {p.text}", rarity).score
                for p in passages), default=0.0)


_NAME_TOKEN = re.compile(r"[a-z0-9]+")
# Words file names use for the kind of document, not for whom it is about.
_DOC_KINDS = frozenset("""
annual quarterly interim report reports filing filings form dated earnings results statement statements financial excerpt
financials presentation transcript press release proxy amendment exhibit draft final version copy scan
agreement contract policy protocol guideline guidelines study paper article notes memo summary
""".split())
_FORM_CODE = re.compile(r"\d{1,2}[kqf]|\d{4}(q|h|fy)\d|(q|h|fy)\d{1,4}|s\d|def\d+\w*")


def _name_words(name: str) -> set[str]:
    """The words of a document's file name that can name it: a company, a product, a party ("3M" too) - not
    a year, a number, a form code ("10K", "8K", "2023Q4") or a word for the kind of document ("earnings")."""
    from app.filters.cross_encoder import doc_label

    return {t for t in _NAME_TOKEN.findall(doc_label(name).lower())
            if len(t) >= 2 and not t.isdigit() and t not in _DOC_KINDS and not _FORM_CODE.fullmatch(t)}


# A name shortened to its words' initials joined by "&" or "n": "J&J" and "JnJ" for Johnson & Johnson, "P&G".
_INITIALS = re.compile(r"(?<![A-Za-z0-9])([A-Z]{1,3})(?:&|n)([A-Z]{1,3})(?![A-Za-z0-9])")


def _initials(name: str) -> str:
    """The initials of the words a file name opens with, up to its first word with a digit (the year or form):
    "jj" for JOHNSON_JOHNSON_2023_8K.pdf; "" for a one-word name, which no such shortening stands for."""
    from app.filters.cross_encoder import doc_label

    lead = []
    for t in _NAME_TOKEN.findall(doc_label(name).lower()):
        if any(c.isdigit() for c in t):
            break
        lead.append(t)
    return "".join(t[0] for t in lead) if len(lead) >= 2 else ""


def named_documents(question: str, names: list[str]) -> list[bool]:
    """Per document name: whether ``question`` names that document among ``names`` (the documents of the
    kept passages), by a word of its name that not all of them share - "Amazon" names AMAZON_2019_10K.pdf
    beside BESTBUY_2019_10K.pdf; "10K" names neither, and no year does. A word all of them share names
    them all when the question has it ("Amazon" for two Amazon filings). A name word also matches words of
    the question run together ("Best Buy's" names BESTBUY_...) and an acronym it starts with ("MGM" names
    MGMRESORTS_...); a name's initials joined by "&" or "n" name it too ("JnJ", "J&J": JOHNSON_JOHNSON_...)."""
    shortened = {(a + b).lower() for a, b in _INITIALS.findall(question)}
    if shortened:
        by_initials = [_initials(n) in shortened for n in names]
        if any(by_initials):
            return by_initials
    words = [_name_words(n) for n in names]
    common = set.intersection(*words) if words else set()
    q_words = _NAME_TOKEN.findall(question.lower())
    joined = "".join(q_words)
    acronyms = [w.lower() for w in re.findall(r"\b[A-Z]{3,}\b", question)]

    def said(t: str) -> bool:
        return (t in q_words or (len(t) >= 5 and t in joined and not any(t in w for w in q_words))
                or any(t.startswith(a) for a in acronyms))

    if any(said(t) for t in common):
        return [True] * len(names)
    return [any(said(t) for t in w - common) for w in words]


def passages_named(question: str, passages: list, documents: dict[str, str] | None = None) -> list[bool] | None:
    """Per passage: whether the question names its document among ``documents`` (doc id -> file name;
    default: the passages' own), by :func:`named_documents`; None when there is one document to answer from
    (a one-document index, or the user chose the document). All the index's documents, not only the kept
    ones: when the filter keeps one filing of several, or document-first search routes to one, "the discount
    rate in 2019" is still that filing's figure given for a question that did not say which."""
    pool = dict(documents) if documents else {}
    pool.update((p.doc_id, p.name) for p in passages)
    if len(pool) < 2:
        return None
    names = sorted(pool.items())
    by_doc = dict(zip((d for d, _ in names), named_documents(question, [n for _, n in names])))
    return [by_doc[p.doc_id] for p in passages]
