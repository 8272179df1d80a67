"""Training of the sentence selector (:mod:`app.answers.selector`) on a pack's labelled rows.

Examples are built the way the selector will be used: each 'extract'-routed training row is asked as the
pack asks it (retrieval over the training corpus) and the sentences of the retrieved passages become
examples. A sentence is positive when it lies inside the row's gold evidence and, when the answer is text
of that evidence (COVID-QA's spans, CUAD's "Pennsylvania"), holds it word for word. Answers written in
another form than the text (CUAD's "4/7/20" for "7th day of April, 2020") rest on the evidence alone.
Containing the answer is not enough where short answers recur: "Pennsylvania" also names a party's state
of incorporation in the preamble, which is not the governing-law clause (67 of legal's 85 governing-law
rows had such a sentence taught as an answer). ``positives="answer"`` keeps the older rule (any sentence
holding a text answer), with which medical's shipped selector was trained (its recorded command
reproduces it). The other sentences of the same passages are the negatives: the near misses the selector
must tell apart. A row whose answer no retrieved sentence holds is looked up in its
own document, so every row teaches where its answer is.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.answers.grounding import content_stems
from app.answers.selector import INFO, SPAN_DIR, candidates
from app.errors import SlmragError, require
from app.filters.cross_encoder import model_passage, normalize


@dataclass
class SelectorExample:
    question: str
    sentence: str  # as the model reads it: document name and heading, then the sentence
    label: float
    row_id: str
    span: tuple[int, int] | None = None  # the answer's character offsets in ``sentence``, when it is its text


def answer_offsets(text: str, answer: str, start: int = 0) -> tuple[int, int] | None:
    """Where ``answer`` occurs in ``text`` at or after ``start``, as character offsets: word for word, but
    blind to case and to how words are spaced or punctuated between them (a PDF's line break, "2 - 14")."""
    words = re.findall(r"\w+", answer)
    if not words:
        return None
    m = re.compile(r"(?<!\w)" + r"\W*".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE).search(text, start)
    return (m.start(), m.end()) if m else None


def _words(text: str) -> set[str]:
    return set(normalize(text).split())


def in_evidence(sentence: str, evidence: str) -> bool:
    """Whether ``sentence`` is (mostly) part of ``evidence``, by their content words; an evidence with no
    content word ("9/9/97") places nothing, so every sentence passes."""
    e = set(content_stems(evidence))
    if not e:
        return True
    s = set(content_stems(sentence))
    return bool(s) and len(s & e) >= 0.5 * min(len(s), len(e))


POSITIVES = ("evidence", "answer")
SHAPES = ("extract", "label")  # the answers a selector chooses the sentence for


def answer_is_text(row: dict, doc_text: str, positives: str = "evidence") -> bool:
    """Whether the row's answer is written word for word in its gold evidence (``positives`` "evidence"; in
    its document when the row has no evidence) or in its document ("answer"): then an answering sentence
    must hold it."""
    answer = normalize(str(row.get("answer", "")))
    where = (str(row.get("evidence") or "") if positives == "evidence" else "") or doc_text
    return len(answer) >= 2 and f" {answer} " in f" {normalize(where)} "


def holds_answer(sentence: str, row: dict, answer_in_doc: bool, positives: str = "evidence") -> bool:
    """Whether ``sentence`` answers ``row``: it contains the answer (when the answer is text:
    ``answer_in_doc``, see :func:`answer_is_text`) and, with ``positives`` "evidence", lies in the gold
    evidence; else most of its words are words of the gold evidence."""
    evidence = str(row.get("evidence") or "")
    if answer_in_doc:
        return (f" {normalize(str(row.get('answer', '')))} " in f" {normalize(sentence)} "
                and (positives == "answer" or in_evidence(sentence, evidence)))
    s, e = _words(sentence), _words(evidence)
    if not s or not e:
        return False
    return len(s & e) >= min(3, len(s)) and len(s & e) >= 0.6 * min(len(s), len(e))


def build_examples(assistant, rows: list[dict], *, seed: int = 0, max_rows: int | None = None, negatives: int = 12,
                   positives: str = "evidence", shape: str = "extract",
                   progress: Callable[[int, int], None] | None = None) -> list[SelectorExample]:
    """The selector's examples from ``rows`` (see the module's docstring); ``positives``: "evidence" (an
    answering sentence lies in the gold evidence) or "answer" (any sentence holding a text answer).
    ``shape``: the rows the pack routes to this shape teach it: "extract" (the sentence that answers) or
    "label" (the sentence that states the clause or finding a yes/no answer rests on: its answer, "Yes", is
    not text of the sentence, so the gold evidence alone places it)."""
    if positives not in POSITIVES:
        raise SlmragError(f"positives must be one of {', '.join(POSITIVES)}, not {positives!r}.")
    if shape not in SHAPES:
        raise SlmragError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}.")
    from app.answers.shapes import route
    from app.assistant import AskOptions
    from app.evaluation.questions import scope

    cfg = assistant.pack.config.answers
    rng = random.Random(seed)
    picked = [r for r in rows if str(r.get("question") or "").strip() and r.get("doc") and r.get("answerable") is not False
              and str(r.get("answer") or "").strip() and route(r["question"], cfg.route, cfg.shapes, cfg.default) == shape
              and (shape == "extract" or str(r.get("evidence") or "").strip())]
    rng.shuffle(picked)
    picked = picked[: max_rows or len(picked)]
    out: list[SelectorExample] = []
    for i, row in enumerate(picked, start=1):
        question, rid = row["question"].strip(), str(row.get("id", i))
        found = assistant.retrieve(question, AskOptions(doc=scope(row))).passages
        own = assistant.retriever.search(question, 50, doc=row["doc"])
        answer_in_doc = shape == "extract" and answer_is_text(row, " ".join(p.text for p in own), positives)
        cands = candidates(found)
        pos = [(n, s) for n, s in cands if holds_answer(s, row, answer_in_doc, positives)]
        if not pos:  # retrieval missed it: the row still teaches where the answer is, from its own document
            own_cands = candidates(own)
            pos = [(n, s) for n, s in own_cands if holds_answer(s, row, answer_in_doc, positives)][:1]
            if pos:
                found, cands = own, own_cands
        if pos:
            neg = [(n, s) for n, s in cands if (n, s) not in pos]
            for n, s in pos[:2] + rng.sample(neg, min(negatives, len(neg))):
                p = found[n - 1] if n <= len(found) else found[0]
                text = model_passage(s, p.name, p.heading)
                positive = (n, s) in pos
                span = answer_offsets(text, str(row["answer"]), len(text) - len(s)) if positive and answer_in_doc else None
                out.append(SelectorExample(question, text, 1.0 if positive else 0.0, rid, span))
        if progress:
            progress(i, len(picked))
    if not any(e.label > 0 for e in out):
        raise SlmragError(f"No '{shape}' training row's answer was found in a sentence of its document; check that the "
                          "rows' 'doc' files are in corpus/ and their 'answer' or 'evidence' is text of those files.")
    return out


def train_selector(examples: list[SelectorExample], out_dir: Path | str, *, epochs: int = 3, lr: float = 5e-4,
                   rank: int = 16, max_length: int = 160, seed: int = 0, span: bool = False, span_epochs: int = 10,
                   progress: Callable[[int, int, float], None] | None = None, info: dict | None = None) -> dict:
    """Train the selector (balanced BCE: does this sentence answer the question?) and save it to ``out_dir``;
    ``span``: also a span model (``span/``, ``span_epochs`` passes) that marks the answer inside the sentence,
    learnt from the answering sentences that hold the row's answer word for word."""
    torch = require("torch")
    from app.training import balanced_bce
    from app.training.pair_model import train_pair_model

    labels = [e.label for e in examples]
    bce = balanced_bce(labels)
    meta = {**(info or {}), "positives": int(sum(labels)), "rows": len({e.row_id for e in examples})}
    meta = train_pair_model([(e.question, e.sentence) for e in examples], labels, out_dir, outputs=1,
                            loss=lambda logits, y: bce(logits.view(-1), torch.tensor(y, dtype=torch.float32)),
                            info_name=INFO, info=meta, epochs=epochs, lr=lr, rank=rank, max_length=max_length,
                            seed=seed, progress=progress)
    if span:
        # A model of its own, trained on the answering sentences only: sharing the ranking model's encoder,
        # the span loss pulled its sentence choice down (medical dev: COVID-QA F1 of the chosen sentences
        # .26 -> .21).
        marked = [e for e in examples if e.span is not None]
        if not marked:
            raise SlmragError("--span: no answering sentence holds its row's answer word for word, so there is no "
                              "span to learn; train without --span.")
        span_meta = train_pair_model([(e.question, e.sentence) for e in marked], [0.0] * len(marked),
                                     Path(out_dir) / SPAN_DIR, outputs=1, loss=None, info_name=INFO,
                                     info={**(info or {}), "span_of": "the sentence selector",
                                           "rows": len({e.row_id for e in marked})},
                                     epochs=span_epochs, lr=lr, rank=rank, max_length=max_length, seed=seed,
                                     spans=[e.span for e in marked], progress=progress)
        meta["span_examples"] = span_meta["span_examples"]
        meta["span_seconds"] = span_meta["seconds"]
        Path(out_dir, INFO).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta

