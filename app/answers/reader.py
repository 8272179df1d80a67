"""The label reader: a small trained model that reads each kept passage and says which verdict, if any, it
gives on a yes/no question.

A 135M generator scoring "yes"/"no" after five passages barely reads them (on PubMedQA its label
log-odds separate gold yes from gold no at AUC 0.60). A verdict, though, is usually stated in one
passage - a study's conclusion, a clause - and telling which label that passage states is a small
classification task a MiniLM cross-encoder learns from a few hundred labelled rows. The reader is a pair
model (:mod:`app.pair_model`) whose head has one output per pack label plus "none" (this passage states
no verdict on the question). It is trained by ``slmrag adapt reader`` on the pack's training rows, asked
as the pack asks them (:mod:`app.training.reader`), and ships in the pack (``answers.label_reader``).

Reading a question: every kept passage is scored; the passage most likely to state a verdict decides,
and its most likely label is the answer, cited to that passage. The caller may restrict which passages can
decide: compose lets only passages of a document that covers what the question names decide, since a
conclusion from another study reads just as decisively as the one asked about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from app.answers.shapes import passage_sentences
from app.filters.cross_encoder import model_passage

NONE = "none"
INFO = "reader.json"


@dataclass
class Reading:
    n: int  # the deciding passage, 1-based
    label: str
    probs: dict[str, float]  # over the labels, for the deciding passage (renormalised without "none")
    verdict: float  # how likely the deciding passage states a verdict at all (1 - P(none))
    sentence: str = ""  # the deciding passage's sentence that states the label most clearly


def decide(rows: np.ndarray, labels: list[str], eligible: Sequence[bool] | None = None) -> Reading:
    """The reading of ``rows`` (softmax probabilities per passage: labels..., none): the passage least
    likely to be "none" decides (ties: the earlier, better-filtered one), then its most likely label.
    ``eligible``: the passages allowed to decide (all when none is, or when not given)."""
    verdicts = 1.0 - rows[:, len(labels)]
    if eligible is not None and any(eligible):
        verdicts = np.where(np.asarray(eligible, dtype=bool), verdicts, -1.0)
    i = int(np.argmax(verdicts))
    p = rows[i, : len(labels)]
    p = p / max(float(p.sum()), 1e-9)
    probs = {lab: float(v) for lab, v in zip(labels, p)}
    return Reading(i + 1, max(labels, key=probs.get), probs, float(verdicts[i]))


class LabelReader:
    """Cheap to construct; the model loads on first use (or :meth:`load`)."""

    def __init__(self, folder: Path | str, labels: Sequence[str]):
        from app.pair_model import PairModel

        self.folder = Path(folder)
        self.labels = list(labels)
        self._model = PairModel(folder)

    @classmethod
    def from_folder(cls, folder: Path | str, labels: Sequence[str]) -> "LabelReader":
        from app.errors import SlmragError
        from app.pair_model import check_folder

        folder = check_folder(folder, "answers.label_reader",
                              "slmrag adapt reader --pack NAME --train DIR; or remove answers.label_reader from pack.yaml.")
        info = folder / INFO
        trained = json.loads(info.read_text(encoding="utf-8")).get("labels") if info.is_file() else None
        if trained is not None and list(trained) != list(labels):
            raise SlmragError(f"The label reader in {folder} was trained for the labels {trained}, but the pack's "
                              f"answers.labels are {list(labels)}. Train it again: slmrag adapt reader --pack NAME --train DIR")
        return cls(folder, labels)

    def load(self) -> "LabelReader":
        self._model.load()
        return self

    def read(self, question: str, passages: Sequence, eligible: Sequence[bool] | None = None) -> Reading:
        """Which label the kept ``passages`` (:class:`app.retrieval.Passage`, best first) give ``question``;
        ``eligible``: the passages allowed to decide (see :func:`decide`)."""
        logits = self._model.logits(question, [model_passage(p.text, p.name, p.heading) for p in passages])
        if logits.shape[1] != len(self.labels) + 1:
            from app.errors import SlmragError

            raise SlmragError(f"The label reader in {self.folder} has {logits.shape[1]} outputs; the pack's "
                              f"{len(self.labels)} labels need {len(self.labels) + 1}. Train it again: slmrag adapt reader")
        reading = decide(_softmax(logits), self.labels, eligible)
        # The support shown is the deciding passage's sentence the reader finds states that label best (a
        # passage holding a study's aims and its conclusion is quoted for the conclusion, not the aims).
        p = passages[reading.n - 1]
        sents = passage_sentences(p.text)
        if len(sents) > 1:
            probs = _softmax(self._model.logits(question, [model_passage(t, p.name, p.heading) for t in sents]))
            reading.sentence = sents[int(np.argmax(probs[:, self.labels.index(reading.label)]))]
        elif sents:
            reading.sentence = sents[0]
        return reading


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
