"""Relevance filters: between the retriever and the generator, keep only passages that bear on the question.

Every filter has ``score(question, passages, *, query_vector=None) -> list[float]``, one score per
passage, higher = more relevant; the assistant compares them with the pack's calibrated threshold.
``query_vector`` is the question's embedding when the caller already has it (the cosine filter uses it
instead of embedding the question again; the others ignore it).

:data:`FILTERS` is the one list of filter kinds: pack.yaml's ``filter.kind`` is validated against it and
:func:`make_filter` builds from it. A factory takes the keyword arguments ``embedder``, ``snapshot``,
``generator``, ``index_dir``, ``model_dir`` (the pack's ``filter.model`` folder, or None) and ``precision``
(``filter.precision``; accept ``**_`` for those it does not need) and returns the filter; it
imports its module itself, so that a kind's heavy libraries (torch for the cross-encoder) load only when
that kind is used. A third-party filter needs this one registration, run before packs are loaded::

    from app.filters import register_filter

    def keyword_filter(*, snapshot, **_):
        from my_plugin.keyword import KeywordFilter
        return KeywordFilter(snapshot)

    register_filter("keyword", keyword_filter)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from app.errors import SlmragError

if TYPE_CHECKING:
    from app.embedder import Embedder
    from app.retrieval import Passage

FilterFactory = Callable[..., object]


class NoFilter:
    """Keeps every passage (score 1.0): retrieval alone decides."""

    def score(self, question: str, passages: Sequence[Passage], *, query_vector=None) -> list[float]:
        return [1.0] * len(passages)


def _none(**_) -> NoFilter:
    return NoFilter()


def _cosine(*, embedder, snapshot=None, **_):
    from app.filters.cosine import CosineFilter

    return CosineFilter(embedder, snapshot)


def _cross_encoder(*, index_dir=None, model_dir=None, precision="fp32", read_tokens=None, **_):
    from app.filters.cross_encoder import CrossEncoderFilter, RelevanceModel
    from app.pair_model import READ_LENGTH

    # A model the pack ships (filter.model, trained on labelled rows) wins over one trained on the index.
    if model_dir:
        return RelevanceModel.from_folder(model_dir, precision=precision, max_length=read_tokens or READ_LENGTH)
    return CrossEncoderFilter.from_index_dir(index_dir, max_length=read_tokens or READ_LENGTH)


def _slm_judge(*, generator=None, **_):
    from app.filters.slm_judge import SLMJudgeFilter

    return SLMJudgeFilter(generator)


FILTERS: dict[str, FilterFactory] = {
    "none": _none,
    "cosine": _cosine,
    "cross_encoder": _cross_encoder,
    "slm_judge": _slm_judge,
}


def register_filter(name: str, factory: FilterFactory) -> FilterFactory:
    """Add a filter kind; refuses a name already taken, so a plugin cannot silently replace a built-in."""
    if name in FILTERS:
        raise SlmragError(f"A filter named '{name}' is already registered; register yours under another name.")
    FILTERS[name] = factory
    return factory


def cosine_decides(cosines: Sequence[float], keep: float | None, floor: float | None) -> list[bool | None]:
    """How ``filter.cosine_keep`` / ``cosine_floor`` decide each candidate for a trained filter, from its cosine:
    True kept (it reaches the keep), False dropped (under the floor), None left to the model. An ask scores only
    the None ones (``Assistant.judge``), and calibration reads those alike (``score_questions``)."""
    return [True if keep is not None and c >= keep else False if floor is not None and c < floor else None
            for c in cosines]


def read_scores(scores: Sequence[float], places: Sequence[int] | None = None, *, relative_to_best: float = 0.0,
                rank_prior: float = 0.0) -> list[float]:
    """How the threshold reads a trained filter's probabilities for one question's candidates:
    sigmoid(l - relative_to_best * l_best - rank_prior * place), l each candidate's log-odds, l_best the best of
    them, ``place`` its place in retrieval's list (0 first). With both 0 the scores stand as they are.

    ``relative_to_best`` (``filter.relative_to_best``): 0 leaves each passage's own score; 1 scores each by its
    distance to the best alone (the best then scores .5); between, a passage must score well on its own *and* near
    the question's best. A relevance model's scale drifts from question to question (one filing's passages all
    score high, another's all low), and the passage that answers is the question's best far more often than it
    clears one fixed line (finance, docs/filter.md). The map is increasing within a question (its order stands).

    ``rank_prior`` (``filter.rank_prior``): log-odds taken off per place down retrieval's list. Retrieval (BM25 and
    dense, document first) is a second opinion the model does not see - it reads one pair at a time - and on the
    training rows the two together rank gold passages above others better than either (docs/filter.md). The first
    candidate loses nothing; the order within a question then leans towards retrieval's."""
    if not scores:
        return []
    if not relative_to_best and not rank_prior:
        return [float(s) for s in scores]
    places = list(range(len(scores))) if places is None else list(places)
    if len(places) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(places)} places")

    def logit(p: float) -> float:
        p = min(max(float(p), 1e-9), 1.0 - 1e-9)  # a probability of exactly 0 or 1 has no finite log-odds
        return math.log(p / (1.0 - p))

    def sigmoid(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    logits = [logit(s) for s in scores]
    best = max(logits)
    return [sigmoid(x - relative_to_best * best - rank_prior * place) for x, place in zip(logits, places)]


def make_filter(kind: str, *, embedder: Embedder, snapshot=None, generator=None, index_dir: Path | None = None,
                model_dir: Path | None = None, precision: str = "fp32", read_tokens: int | None = None):
    factory = FILTERS.get(kind)
    if factory is None:
        raise SlmragError(f"Unknown filter '{kind}'. Known: {', '.join(FILTERS)}.")
    return factory(embedder=embedder, snapshot=snapshot, generator=generator, index_dir=index_dir,
                   model_dir=model_dir, precision=precision, read_tokens=read_tokens)
