"""Answer metrics per source and per answer shape (issue 14), plus answer hygiene.

Each source is scored by its own task's rule:

* PubMedQA: the label (from the answer's ``label`` when it has one, else read from the text) against the
  gold yes/no/maybe; accuracy and macro-F1 over the three labels.
* COVID-QA: SQuAD token F1 and exact match of the answer span (the quote when there is one).
* CUAD: a gold "Yes" (the clause exists) is matched by the quoted clause overlapping a gold span with word
  Jaccard >= 0.5 (CUAD's own rule); a value (a date, a place, a period) by normalised value: dates compared
  as (year, month, day), number words as digits, the gold contained in the answer.
* TAT-QA: exact match (a number equal to the gold after rounding to 2 decimals, scale restatements allowed;
  a span equal after normalisation) and a numeric-aware token F1.
* FinanceBench: a number within 1 % of the gold's, or the gold phrase (token F1 >= 0.5).

Hygiene: share of answers citing a passage that was in the prompt, sentences per answer, answers with a
repeated sentence, quotes that are verbatim substrings of a passage, and answers that are slmrag's quote of
a passage on the model's behalf rather than the model's own.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

from app.evaluation.metrics import (CITATION as _CITE, _squad_normalize, evidence_spans, exact_match,
                                    extract_label, mean, numbers_match, parse_numbers, token_f1)

_QUOTE = re.compile(r"^[\s\u201c\"]+|[\s\u201d\"]+$")
_MONTHS = {m: i + 1 for i, m in enumerate(
    "january february march april may june july august september october november december".split())}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())} | {
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "twenty": "20", "thirty": "30", "forty": "40",
    "forty-five": "45", "sixty": "60", "ninety": "90", "hundred": "100"}


def answer_span(info: Mapping[str, Any], text: str) -> str:
    """What the answer states, without citations, quotes or the label's lead word."""
    quote = (info.get("details") or {}).get("quote") or {}
    if quote.get("text"):
        return quote["text"]
    span = _CITE.sub(" ", text)
    return _QUOTE.sub("", span).strip()


# ---------------------------------------------------------------------------------------------- CUAD
def _dates(text: str) -> set[tuple]:
    out: set[tuple] = set()
    low = text.lower()
    for m in re.finditer(r"\b(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})\b", low):
        y = int(m.group(3))
        out.add((y + 2000 if y < 50 else (y + 1900 if y < 100 else y), int(m.group(1)), int(m.group(2))))
    month = "|".join(_MONTHS)
    for m in re.finditer(rf"\b({month})\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", low):
        out.add((int(m.group(3)), _MONTHS[m.group(1)], int(m.group(2))))
    for m in re.finditer(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:day\s+of\s+)?({month}),?\s+(\d{{4}})\b", low):
        out.add((int(m.group(3)), _MONTHS[m.group(2)], int(m.group(1))))
    return out


def _value_norm(text: str) -> str:
    words = re.findall(r"[a-z0-9-]+", text.lower())
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words)


def cuad_value_match(prediction: str, gold: str) -> bool:
    gold_dates = _dates(gold)
    if gold_dates:
        return bool(gold_dates & _dates(prediction))
    year_only = re.fullmatch(r"\[\]/\[\]/(\d{4})", gold.strip())
    if year_only:
        return year_only.group(1) in prediction
    g, p = _value_norm(gold), _value_norm(prediction)
    # "ninety (90) days" -> "90 90 days": collapse a number repeated in parentheses
    p = re.sub(r"\b(\d+) \1\b", r"\1", p)
    return bool(g) and (f" {g} " in f" {p} ")


def jaccard(a: str, b: str) -> float:
    x, y = set(_squad_normalize(a).split()), set(_squad_normalize(b).split())
    return len(x & y) / len(x | y) if x and y else 0.0


# ---------------------------------------------------------------------------------------------- TAT-QA
def _num_tokens(text: str) -> list[str]:
    """Words (SQuAD-normalised) and numbers (thousands separators dropped, rounded to 2 decimals)."""
    out = []
    for tok in re.findall(r"\d[\d,]*(?:\.\d+)?|[^\W\d_]+", text.lower()):
        if tok[0].isdigit():
            out.append(f"{round(float(tok.replace(',', '')), 2):g}")
        elif _squad_normalize(tok):
            out.append(_squad_normalize(tok))
    return out


def numeric_f1(prediction: str, gold: str) -> float:
    pred, ref = _num_tokens(prediction), _num_tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def _gold_text(q: Mapping[str, Any]) -> str:
    raw = q.get("answer_raw")
    if isinstance(raw, list):
        return " ".join(str(x) for x in raw)
    return str(raw if raw not in (None, "") else q.get("answer", ""))


# ---------------------------------------------------------------------------------------------- scoring
def task_score(info: Mapping[str, Any], text: str, q: Mapping[str, Any], abstained: bool) -> dict:
    """The task metric(s) of one answer; ``info`` holds the answer's shape/label/details when slmrag made it."""
    source = str(q.get("source", "")).lower()
    gold = str(q.get("answer", ""))
    span = "" if abstained else answer_span(info, text)
    # The answer's words without its citation markers: "[2]" is not the number 2 (it once matched a gold
    # "$2,018mn" read as 2 billion).
    plain = _CITE.sub(" ", text)
    out: dict[str, Any] = {"source": source}
    if source == "pubmedqa":
        # slmrag's label answers carry their label; one without (no verdict stated: a quote) states none, and its
        # quote's own "no" ("there was no difference") is not one. Other answers are read from their text.
        label = None if abstained or (info.get("shape") == "label" and not info.get("label")) else (
            info.get("label") or extract_label(text))
        out.update(pred_label=label, gold_label=gold.strip().lower(), correct=label == gold.strip().lower())
    elif source == "covid-qa":
        out.update(f1=token_f1(span, gold), em=exact_match(span, gold))
        out["correct"] = out["f1"] >= 0.5
    elif source == "cuad":
        if gold.strip().lower() == "yes":
            spans = evidence_spans(q) or [str(q.get("evidence", ""))]
            j = max((jaccard(span, s) for s in spans), default=0.0) if span else 0.0
            out.update(kind="clause", jaccard=j, correct=j >= 0.5)
        else:
            out.update(kind="value", correct=bool(span) and cuad_value_match(span + " " + plain, gold))
    elif source == "tat-qa":
        calc = (info.get("details") or {}).get("calculation") or {}
        pred = f"{calc['value']}" if "value" in calc else span
        gold_text = _gold_text(q)
        scale = q.get("scale") if isinstance(q.get("scale"), str) else None
        if parse_numbers(gold_text):
            em = bool(pred) and numbers_match(pred, gold_text, scale=scale, rel_tol=0.005)
        else:
            em = bool(pred) and (exact_match(pred, gold_text) or _squad_normalize(gold_text) in _squad_normalize(pred))
        out.update(em=em, f1=max(numeric_f1(pred, gold_text), 1.0 if em else 0.0), correct=em)
    elif source == "financebench":
        ok = bool(span) and (numbers_match(plain, gold, rel_tol=0.01) if parse_numbers(gold) else token_f1(span, gold) >= 0.5)
        out.update(correct=ok)
    else:
        out.update(f1=token_f1(span, gold), correct=token_f1(span, gold) >= 0.5)
    return out


def hygiene(info: Mapping[str, Any], text: str, n_context: int, abstained: bool) -> dict:
    if abstained:
        return {"answered": False}
    cited = {int(x) for x in re.findall(r"\[(\d{1,2})\]", text)}
    sents = [s for s in re.split(r"(?<=[.!?])\s+", _CITE.sub("", text)) if s.strip()]
    keys = [_squad_normalize(s) for s in sents]
    quote = (info.get("details") or {}).get("quote")
    return {"answered": True, "valid_citation": any(1 <= c <= n_context for c in cited), "sentences": len(sents),
            "repeated_sentence": len(keys) != len(set(keys)),
            "verbatim_quote": None if not quote else bool(quote.get("verbatim")),
            # slmrag quoted a passage on the model's behalf (its answer failed the check, or it said "not
            # found" over kept passages): grounded by construction, but not the model's answer
            "quoted_for_model": bool(quote) and quote.get("by_model") is False}


def summarize(runs: list[dict]) -> dict:
    """Per source: the task metrics; overall: hygiene and abstention, over one system's answered records."""
    by_source: dict[str, list[dict]] = {}
    for r in runs:
        if "task" in r:
            by_source.setdefault(r["task"]["source"], []).append(r["task"])
    out: dict[str, Any] = {}
    for source, tasks in sorted(by_source.items()):
        block: dict[str, Any] = {"n": len(tasks), "correct": mean(t["correct"] for t in tasks)}
        if source == "pubmedqa":
            block["accuracy"] = block["correct"]
            f1s = []
            for lab in ("yes", "no", "maybe"):
                tp = sum(1 for t in tasks if t["pred_label"] == lab and t["gold_label"] == lab)
                fp = sum(1 for t in tasks if t["pred_label"] == lab and t["gold_label"] != lab)
                fn = sum(1 for t in tasks if t["pred_label"] != lab and t["gold_label"] == lab)
                f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
            block["macro_f1"] = sum(f1s) / 3
        if source in ("covid-qa", "tat-qa"):
            block["f1"] = mean(t["f1"] for t in tasks)
            block["em"] = mean(t["em"] for t in tasks)
        if source == "cuad":
            block["clause_match"] = mean(t["correct"] for t in tasks if t.get("kind") == "clause")
            block["value_match"] = mean(t["correct"] for t in tasks if t.get("kind") == "value")
        out[source] = block
    hy = [r["hygiene"] for r in runs if r.get("hygiene", {}).get("answered")]
    out["hygiene"] = {
        "answered": len(hy),
        "valid_citation": mean(h["valid_citation"] for h in hy),
        "sentences_per_answer": mean(h["sentences"] for h in hy),
        "repeated_sentence_answers": sum(1 for h in hy if h["repeated_sentence"]),
        "verbatim_quotes": mean(h["verbatim_quote"] for h in hy if h["verbatim_quote"] is not None),
        "quoted_for_model": mean(h.get("quoted_for_model", False) for h in hy),
    }
    return out
