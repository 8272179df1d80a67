"""The sentence selector: a small trained model that finds the sentence of the kept passages that answers
an 'extract' question (a date, a party, a clause, a dose).

Asked to quote its answer, the 135M generator often quotes the wrong line or a fragment (COVID-QA token
F1 .17 on the dev set, where quoting the one sentence that holds the answer would score .46). Which
sentence answers a question is what a MiniLM cross-encoder learns from a few hundred labelled rows. The
selector is a one-output pair model (:mod:`app.pair_model`) trained by ``slmrag adapt selector``
(:mod:`app.training.selector`) and shipped in the pack (``answers.extract_selector``). Its answer is the
chosen sentence word for word, cited to its passage: nothing is generated, so nothing can be misquoted.

Trained with ``--span``, the selector also marks where in the chosen sentence the answer lies (a second
pair model in its ``span/`` folder, with a token head for start and end, as extractive QA readers have):
the answer is then that part - "2 to 14 days" - shown with the whole sentence as its support. COVID-QA's
answers are a third of the sentence that holds them, so the sentence alone scores half the token F1 it
could.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from app.answers.shapes import passage_sentences
from app.filters.cross_encoder import model_passage, sigmoid

INFO = "selector.json"
SPAN_DIR = "span"  # inside the selector's folder: the span model, when trained with --span
MAX_CANDIDATES = 80  # sentences scored per question (5 kept passages hold ~40)


@dataclass
class Selection:
    n: int  # the passage, 1-based
    sentence: str  # verbatim from that passage
    score: float  # sigmoid of the model's logit: how likely this sentence answers the question
    span: str = ""  # with a span head: the part of the sentence that answers, verbatim
    span_score: float | None = None  # its probability (start times end)


def candidates(passages: Sequence) -> list[tuple[int, str]]:
    """(passage number, sentence) for every sentence of the kept passages with a few words, best passage first."""
    out = []
    for n, p in enumerate(passages, start=1):
        out += [(n, s) for s in passage_sentences(p.text) if len(s.split()) >= 3]
    return out[:MAX_CANDIDATES]


class SentenceSelector:
    """Cheap to construct; the model loads on first use (or :meth:`load`)."""

    def __init__(self, folder: Path | str):
        from app.pair_model import PairModel

        self.folder = Path(folder)
        self._model = PairModel(folder)
        self._span = PairModel(self.folder / SPAN_DIR)

    @classmethod
    def from_folder(cls, folder: Path | str, shape: str = "extract") -> "SentenceSelector":
        """``shape``: the answers it chooses sentences for; ``answers.<shape>_selector`` names ``folder``."""
        from app.pair_model import check_folder

        setting = f"{shape}_selector"
        return cls(check_folder(folder, f"answers.{setting}", f"slmrag adapt selector --pack NAME --train DIR --shape "
                                f"{shape}; or remove answers.{setting} from pack.yaml."))

    def load(self) -> "SentenceSelector":
        self._model.load()
        if self.has_span:
            self._span.load()
        return self

    @property
    def has_span(self) -> bool:
        return self._span.has_span

    def marked(self, question: str, selection: Selection, passages: Sequence) -> Selection:
        """``selection`` with the part of its sentence that answers ``question`` (when the selector was trained
        with a span head; else unchanged): a date, a number, a name rather than the sentence around it."""
        if not self.has_span:
            return selection
        p = passages[selection.n - 1]
        text = model_passage(selection.sentence, p.name, p.heading)
        offset = len(text) - len(selection.sentence)  # the sentence ends the text the model reads
        start, end, prob = self._span.span(question, text, offset)
        span = text[start:end].strip()
        return replace(selection, span=span, span_score=round(prob, 4)) if span else selection

    def rank(self, question: str, passages: Sequence) -> list[Selection]:
        """The sentences of ``passages`` (:class:`app.retrieval.Passage`), most likely to answer ``question`` first."""
        cands = candidates(passages)
        if not cands:
            return []
        texts = [model_passage(s, passages[n - 1].name, passages[n - 1].heading) for n, s in cands]
        scores = sigmoid(self._model.logits(question, texts)[:, 0])
        order = sorted(range(len(cands)), key=lambda i: (-scores[i], i))
        return [Selection(cands[i][0], cands[i][1], float(scores[i])) for i in order]
