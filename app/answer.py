"""The answer: generated in its shape, checked against its sources, then assembled with citations.

:class:`AnswerStream` does no retrieval or prompt work (the :class:`~app.assistant.Assistant` did that
before creating it). Iterating it waits for its turn in the :class:`~app.queueing.AnswerQueue` (when
given one), runs the generation stage (:func:`app.answers.compose.compose`) holding its place, and yields the answer's text once it has passed the grounding check - a small model's draft is never shown
before it is checked - and :attr:`AnswerStream.answer` then holds the complete :class:`Answer`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from app.answers.compose import compose
from app.queueing import HEARTBEAT_S, AnswerQueue, PositionCallback
from app.retrieval import Passage


def abstain_reason(*, decided_by: str, withheld: bool, off_topic: bool, other_document: bool = False,
                   gated: bool = False) -> str:
    """Why an answer gave none - the branch of the pack's ``abstain.j2`` its text uses and what the UI says:
    "unsupported" (written, then withheld by the grounding check), "unnamed" (several documents, the question
    names none), "other_document" (the question names a document, the answer came from another), "model" (the
    model or the label reader found no answer), "off_topic" (the pack's topic gate turned the question away),
    "gated" (no candidate reached the pack's cosine gate, filter.gate) or "filter" (no passage passed the
    filter). The one place this is decided."""
    if withheld:
        return "unsupported"
    if decided_by == "document":
        return "other_document" if other_document else "unnamed"
    if decided_by == "model":
        return "model"
    if off_topic:
        return "off_topic"
    return "gated" if gated else "filter"


def nearest_sources(context: list[Passage], named: list[bool] | None = None, n: int = 3) -> list[Passage]:
    """The passages a withheld answer lists as the nearest sources: the first ``n`` of ``context``, those of the
    documents the question names first (``named``, per passage) - for "Boeing's tax rate" answered from
    Costco's filing, Boeing's passages, not Costco's."""
    if named:
        context = [p for p, k in zip(context, named) if k] + [p for p, k in zip(context, named) if not k]
    return context[:n]


@dataclass
class Answer:
    question: str
    answer: str
    abstained: bool
    citations: list[dict]
    passages: list[Passage]
    context: list[Passage]
    disclaimer: str
    timings: dict
    filter: dict
    index_generation: int = 0  # the index snapshot this answer was retrieved from
    shape: str = "free"
    label: str | None = None
    grounded: bool | None = None  # None when nothing was generated (the filter kept no passage)
    support: dict | None = None  # the grounding check's score, what it looked up, what it missed
    decided_by: str = ""  # which check decided: filter, model, citation, verbatim, lexical, none
    withheld: bool = False  # an unsupported answer replaced by the abstention
    details: dict = field(default_factory=dict)  # label scores, the verbatim quote, the calculation
    nearest: list[dict] = field(default_factory=list)  # an abstention's nearest sources, numbered as its text
    reason: str | None = None  # an abstention's :func:`abstain_reason`; None when it answered

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "shape": self.shape,
            "label": self.label,
            "grounded": self.grounded,
            "support": self.support,
            "decided_by": self.decided_by,
            "withheld": self.withheld,
            "details": self.details,
            "citations": self.citations,
            "nearest": self.nearest,
            "abstain_reason": self.reason,
            "passages": [p.to_json() for p in self.passages],
            "abstained": self.abstained,
            "filter": self.filter,
            "index_generation": self.index_generation,
            "disclaimer": self.disclaimer,
            "timings": self.timings,
        }


def cite_dict(n: int, p: Passage) -> dict:
    return {"n": n, "source": p.source, "name": p.name, "page": p.page, "heading": p.heading, "text": p.text}


class AnswerStream:
    """Iterate for the answer's text; then :attr:`answer` holds the complete :class:`Answer`.

    ``prompt`` is None when nothing passed the filter: the stream then yields the abstention once.
    ``abstain(passages, reason)`` renders the pack's abstention naming those passages as the nearest sources.
    """

    def __init__(self, *, question: str, generator, prompt, passages: list[Passage],
                 abstain: Callable[[list[Passage], str], str], answers, disclaimer: str, filter, timings: dict,
                 t0: float, index_generation: int = 0, label_not_found: bool = False, label_prior=None, reader=None,
                 selector=None, label_selector=None, documents: dict[str, str] | None = None, same_table=None,
                 rarity=None,
                 queue: AnswerQueue | None = None, on_position: PositionCallback | None = None):
        self.question = question
        self.generator = generator
        self.prompt = prompt
        self.passages = passages
        self.context: list[Passage] = list(prompt.context) if prompt is not None else []
        self.max_tokens = prompt.max_tokens if prompt is not None else 0
        self.shape = prompt.shape if prompt is not None else "free"
        self.abstained = prompt is None
        self.abstain = abstain
        self.answers = answers
        self.label_not_found = label_not_found
        self.label_prior = label_prior  # a callable giving the content-free label probabilities, or None
        self.reader = reader  # the pack's label reader and sentence selector, or None (see compose)
        self.selector = selector
        self.label_selector = label_selector
        self.documents = documents  # what the question could be answered from (see compose's documents)
        self.same_table = same_table  # passages -> the rest of the tables they hold (Retriever.same_table)
        self.rarity = rarity  # the index's WordRarity when the pack weighs question words by it (grounding.question_words)
        self.disclaimer = disclaimer
        self.filter = filter
        self.timings = dict(timings)
        self.t0 = t0
        self.index_generation = index_generation
        self.queue = queue  # generation waits for a place here; retrieval already ran outside it
        self.on_position = on_position  # told how many questions are ahead while this one waits
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        t = self.timings
        fields: dict = {}
        nearest: list[Passage] = []
        if self.prompt is None:
            nearest = self.passages[:3]
            # The topic gate's verdict is its own reason: the question, not the passages, was turned away.
            reason = abstain_reason(decided_by="filter", withheld=False, off_topic=bool(self.filter.get("off_topic")),
                                    gated=bool(self.filter.get("gated")))
            text, citations = self.abstain(nearest, reason), []
            fields = {"decided_by": "filter", "reason": reason}
            t.update(first_token_s=round(time.perf_counter() - self.t0, 4), tokens=0, tokens_per_s=None)
        else:
            gate = self.queue.admit(self.on_position, heartbeat_s=HEARTBEAT_S) if self.queue is not None else contextlib.nullcontext()
            with gate as admission:  # the place is released before the answer is handed out
                if admission is not None:
                    t["queue_s"], t["queue_ahead"] = admission.waited_s, admission.ahead
                gen_start = time.perf_counter()
                c = compose(self.generator, self.prompt, self.question, self.answers,
                            label_not_found=self.label_not_found,
                            label_prior=self.label_prior() if self.label_prior and self.shape == "label" and self.reader is None else None,
                            reader=self.reader, selector=self.selector, label_selector=self.label_selector,
                            documents=self.documents, same_table=self.same_table, rarity=self.rarity,
                            retrieved=self.passages)
            s = c.shaped
            self.context.extend(c.added)  # parts of a statement the answer read beyond the prompt's passages
            gen = c.timings
            t["first_token_s"] = round(gen_start - self.t0 + gen["first_token_s"], 4)
            t["tokens"] = gen["tokens"]
            decode_s = gen["generate_s"] - gen["first_token_s"]
            t["tokens_per_s"] = round((gen["tokens"] - 1) / decode_s, 2) if gen["tokens"] > 1 and decode_s > 0 else None
            fields = {"shape": s.shape, "label": s.label, "grounded": c.grounded, "decided_by": c.decided_by,
                      "support": c.support.to_json() if c.support else None,
                      "details": {k: v for k, v in s.to_json().items() if v is not None and k != "shape"}}
            unnamed = c.decided_by == "document"  # never shown, not even flagged: it answers another question
            withhold = s.refused or unnamed or (not c.grounded and self.answers.grounding.on_unsupported == "withhold")
            if withhold:
                # Grounded or silent: the user sees the abstention with the passages that were considered.
                nearest = nearest_sources(self.context, c.named if c.other_document else None) or self.passages[:3]
                # A refusal is decided by "model" and an unnamed document by "document" (compose); the rest
                # was written and then withheld.
                fields["withheld"] = not (s.refused or unnamed)
                reason = abstain_reason(decided_by=c.decided_by, withheld=fields["withheld"], off_topic=False,
                                        other_document=c.other_document)
                text, citations = self.abstain(nearest, reason), []
                self.abstained = True
                fields["reason"] = reason
            else:
                text = s.text
                citations = [cite_dict(n, self.context[n - 1]) for n in s.cited]
        t["total_s"] = round(time.perf_counter() - self.t0, 4)
        yield text
        self.answer = Answer(self.question, text, self.abstained, citations, self.passages, self.context,
                             self.disclaimer, dict(t), dict(self.filter), self.index_generation,
                             nearest=[cite_dict(i + 1, p) for i, p in enumerate(nearest)], **fields)

    def run(self) -> Answer:
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer
