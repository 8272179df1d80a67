"""The sentence selector: a small trained model that finds the sentence of the kept passages that answers
an 'extract' question (a date, a party, a clause, a dose).

Asked to quote its answer, the 135M generator often quotes the wrong line or a fragment (COVID-QA token
F1 .17 on the dev set, where quoting the one sentence that holds the answer would score .46). Which
sentence answers a question is what a MiniLM cross-encoder learns from a few hundred labelled rows. The
selector is a one-output pair model (:mod:`app.pair_model`) trained by ``slmrag adapt selector``
(:mod:`app.training.selector`) and shipped in the pack (``answers.extract_selector``). Its answer is the
chosen sentence word for word, cited to its passage: nothing is generated, so nothing can be misquoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from app.answers.shapes import passage_sentences
from app.filters.cross_encoder import model_passage

INFO = "selector.json"
MAX_CANDIDATES = 80  # sentences scored per question (5 kept passages hold ~40)


@dataclass
class Selection:
    n: int  # the passage, 1-based
    sentence: str  # verbatim from that passage
    score: float  # sigmoid of the model's logit: how likely this sentence answers the question


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

    @classmethod
    def from_folder(cls, folder: Path | str) -> "SentenceSelector":
        from app.pair_model import check_folder

        return cls(check_folder(folder, "answers.extract_selector", "slmrag adapt selector --pack NAME --train DIR; "
                                "or remove answers.extract_selector from pack.yaml."))

    def load(self) -> "SentenceSelector":
        self._model.load()
        return self

    def rank(self, question: str, passages: Sequence) -> list[Selection]:
        """The sentences of ``passages`` (:class:`app.retrieval.Passage`), most likely to answer ``question`` first."""
        cands = candidates(passages)
        if not cands:
            return []
        texts = [model_passage(s, passages[n - 1].name, passages[n - 1].heading) for n, s in cands]
        logits = self._model.logits(question, texts)[:, 0].astype("float64")
        scores = 1.0 / (1.0 + np.exp(-logits))
        order = sorted(range(len(cands)), key=lambda i: (-scores[i], i))
        return [Selection(cands[i][0], cands[i][1], float(scores[i])) for i in order]
