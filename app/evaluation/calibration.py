"""Calibration of a relevance filter: the threshold that keeps a target share of the gold passages.

:func:`calibrate` runs a pack's own retrieval over dev questions, labels each candidate gold or not with
:func:`app.evaluation.questions.holds_evidence` (the rule ``slmrag eval`` uses), scores the candidates
with the filter and picks the threshold (:meth:`Calibration.threshold_for`): the highest one at which an ask
still keeps ``keep`` (95 %) of the gold passages (:func:`choose_threshold` for plain scores). :func:`rates` and :func:`auc` describe how well a filter separates
gold from the rest. ``slmrag filter calibrate`` stores the result with :mod:`app.pack_edit`.

With a *gate* (``filter.gate``), a question keeps nothing unless one of its candidates reaches the gate in
cosine similarity, whatever the filter's scores: :func:`choose_gate` sets it from the answerable questions'
best cosine (at most ``max_false`` of them gated), and every rate is then reported for gate + filter.
A pack's *topic gate* (``filter.topic_model``, :mod:`app.filters.topic`) is counted the same way: a
question it turns away keeps nothing, so every rate is measured as an ask would see it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from app.answers.grounding import best_coverage
from app.errors import SlmragError
from app.evaluation.questions import holds_evidence, scope
from app.filters import cosine_decides, read_scores


def choose_threshold(gold_scores: Sequence[float], *, keep: float = 0.95) -> float:
    """The highest threshold (``score >= t`` is kept) that keeps at least ``keep`` of the gold scores.

    Any threshold in (g[i-1], g[i]] keeps the same gold passages, and the highest one drops the most
    non-gold, so the answer is a gold score itself: with gold sorted ascending, g[floor((1-keep)*n)].
    """
    g = sorted(float(x) for x in gold_scores)
    if not g:
        raise SlmragError("No gold passage was retrieved for any calibration question, so no threshold can be "
                          "chosen; check that the questions' 'doc' files are in the pack's index.")
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    n = len(g)
    idx = int(math.floor((1.0 - keep) * n + 1e-9))
    return g[min(idx, n - 1)]


def choose_gate(best_cosines: Sequence[float], *, max_false: float = 0.02) -> float:
    """The highest gate that abstains on at most ``max_false`` of answerable questions, given each one's
    best cosine among its candidates: with them sorted ascending, a[floor(max_false * n)] (the questions
    below it are exactly the floor(max_false * n) lowest)."""
    a = sorted(float(x) for x in best_cosines)
    if not a:
        raise SlmragError("No answerable calibration question (none had a gold passage among its candidates), so "
                          "no gate can be chosen.")
    if not 0 <= max_false < 1:
        raise ValueError("max_false must be in [0, 1)")
    return a[min(int(math.floor(max_false * len(a) + 1e-9)), len(a) - 1)]


def rates(gold_scores: Sequence[float], other_scores: Sequence[float], threshold: float) -> tuple[float, float]:
    """(share of gold kept, share of non-gold dropped) at ``threshold`` (kept when score >= threshold)."""
    g = np.asarray(gold_scores, dtype="float64")
    o = np.asarray(other_scores, dtype="float64")
    kept = float((g >= threshold).mean()) if g.size else float("nan")
    dropped = float((o < threshold).mean()) if o.size else float("nan")
    return kept, dropped


def auc(gold_scores: Sequence[float], other_scores: Sequence[float]) -> float:
    """Probability that a gold passage outscores a non-gold one (ties count half)."""
    g = np.asarray(gold_scores, dtype="float64")
    o = np.asarray(other_scores, dtype="float64")
    if not g.size or not o.size:
        return float("nan")
    allv = np.concatenate([g, o])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv), dtype="float64")
    sorted_v = allv[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    r_g = ranks[: len(g)].sum()
    return float((r_g - len(g) * (len(g) + 1) / 2.0) / (len(g) * len(o)))


@dataclass
class ScoredQuestion:
    question: dict
    scores: list[float]
    gold: list[bool]
    best_cosine: float | None = None  # the gate's score: the best cosine among the candidates
    on_topic: bool = True  # the pack's topic gate admits the question (True when the pack has none)
    model_scores: list[float] | None = None  # every candidate's model score when cosine decides some (floor, keep)
    covered: bool = False  # a candidate holds the question's words at the pack's filter.gate_coverage: passes the gate
    rescued: list[bool] | None = None  # cosine reaches filter.cosine_keep: kept whatever the filter scores

    def passes(self, gate: float | None) -> bool:
        return self.on_topic and (gate is None or self.covered
                                  or (self.best_cosine is not None and self.best_cosine >= gate))

    def kept(self, threshold: float, gate: float | None) -> list[bool]:
        """Which candidates an ask keeps at ``threshold``: none when a gate turns the question away; else those
        scoring at least it and those cosine_keep keeps (``rescued``)."""
        if not self.passes(gate):
            return [False] * len(self.scores)
        return [s >= threshold or bool(self.rescued and self.rescued[i]) for i, s in enumerate(self.scores)]

    def abstains(self, threshold: float, gate: float | None) -> bool:
        return not any(self.kept(threshold, gate))


@dataclass
class Calibration:
    kind: str
    threshold: float
    keep_target: float
    questions: list[ScoredQuestion]
    out_of_pack: list[ScoredQuestion] = field(default_factory=list)
    gate: float | None = None
    topic_threshold: float | None = None  # the pack's topic gate, counted in every rate; None: it has none
    cosine_keep: float | None = None  # passages of at least this cosine are kept whatever the filter scores
    cosine_floor: float | None = None  # passages under this cosine count as dropped (scored -inf)
    relative: float = 0.0  # share of the question's best log-odds taken out of each score (filter.relative_to_best)
    rank_prior: float = 0.0  # log-odds taken off each score per place down retrieval's list (filter.rank_prior)

    @property
    def gold_scores(self) -> list[float]:
        return [s for q in self.questions for s, g in zip(q.scores, q.gold) if g]

    @property
    def other_scores(self) -> list[float]:
        return [s for q in self.questions for s, g in zip(q.scores, q.gold) if not g]

    def _kept(self, t: float, gold: bool) -> list[bool]:
        """Whether each gold (or non-gold) passage is kept at ``t``, as an ask keeps it (:meth:`ScoredQuestion.kept`)."""
        return [k for q in self.questions for k, g in zip(q.kept(t, self.gate), q.gold) if g == gold]

    def row(self, t: float) -> dict:
        gold, other = self._kept(t, True), self._kept(t, False)
        kept = float(np.mean(gold)) if gold else float("nan")
        dropped = 1.0 - float(np.mean(other)) if other else float("nan")
        answerable = [q for q in self.questions if any(q.gold)]
        row = {"threshold": t, "gold_kept": kept, "nongold_dropped": dropped,
               "false_abstention": float(np.mean([q.abstains(t, self.gate) for q in answerable]))
               if answerable else float("nan")}
        if self.out_of_pack:
            row["oop_abstention"] = float(np.mean([q.abstains(t, self.gate) for q in self.out_of_pack]))
        return row

    def threshold_for(self, keep: float) -> float:
        """The highest threshold at which an ask keeps ``keep`` of all gold passages (gated questions', those
        under the cosine floor and those cosine_keep rescues counted as an ask would see them). Any threshold
        between two gold scores keeps the same gold, so it is a gold score itself; with no filter score that
        reaches ``keep`` (the gate or floor lose too much gold), the lowest score keeps all that can be kept."""
        finite = [s for q in self.questions for s in q.scores if math.isfinite(s)]
        if not finite:
            raise SlmragError("No candidate of any calibration question has a filter score to choose a threshold "
                              "from (all under the cosine floor?); lower --cosine-floor or check the questions.")
        candidates = sorted({s for s in self.gold_scores if math.isfinite(s)}, reverse=True)
        for t in candidates:  # only the gold share is needed: row() would count abstentions too, per candidate
            if np.mean(self._kept(t, True)) >= keep - 1e-12:
                return t
        return min(finite)

    def table(self) -> list[dict]:
        ts = {self.threshold}
        for keep in (1.0, 0.99, 0.975, 0.95, 0.9, 0.8, 0.7):
            ts.add(self.threshold_for(keep))
        return [self.row(t) for t in sorted(ts)]

    def filter_auc(self) -> float:
        """AUC of the ranking as the filter makes it: a passage cosine_keep keeps first (+inf), one under the
        cosine floor last (-inf, already in ``scores``), the model's score between."""
        inf = float("inf")
        ranked = [([inf if q.rescued and q.rescued[i] else s for i, s in enumerate(q.scores)], q.gold)
                  for q in self.questions]
        return auc([s for ss, gg in ranked for s, g in zip(ss, gg) if g], [s for ss, gg in ranked for s, g in zip(ss, gg) if not g])

    def ranking_auc(self) -> float:
        """AUC of the filter's own scores, cosine_floor and cosine_keep aside: every candidate's model score, read
        in its question as the threshold reads it (``filter.relative_to_best``, ``filter.rank_prior``)."""
        own = [(q.model_scores or q.scores, q.gold) for q in self.questions]
        return auc([s for ss, gg in own for s, g in zip(ss, gg) if g], [s for ss, gg in own for s, g in zip(ss, gg) if not g])

    def summary(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold, "keep_target": self.keep_target, "gate": self.gate,
                **({"topic_threshold": self.topic_threshold} if self.topic_threshold is not None else {}),
                **({"cosine_keep": self.cosine_keep} if self.cosine_keep is not None else {}),
                **({"cosine_floor": self.cosine_floor} if self.cosine_floor is not None else {}),
                **({"relative_to_best": self.relative} if self.relative else {}),
                **({"rank_prior": self.rank_prior} if self.rank_prior else {}),
                "questions": len(self.questions),
                "answerable": sum(1 for q in self.questions if any(q.gold)),
                "gold_passages": len(self.gold_scores), "nongold_passages": len(self.other_scores),
                "auc": self.ranking_auc(),
                **({"filter_auc": self.filter_auc()} if self.cosine_floor is not None or self.cosine_keep is not None else {}),
                **self.row(self.threshold)}


def score_questions(filt, retriever, questions: Iterable[dict], k: int, *, labelled: bool = True,
                    cosine=None, topic: Callable[[str], bool] | None = None, cosine_keep: float | None = None,
                    cosine_floor: float | None = None, progress: Callable[[], None] | None = None, gate_coverage: float | None = None,
                    opening_words: int = 0, rarity=None, relative: float = 0.0,
                    rank_prior: float = 0.0) -> list[ScoredQuestion]:
    """Retrieve ``k`` candidates per question, score them with ``filt`` and, when ``labelled``, mark the gold
    ones; labelled questions are searched as ``slmrag eval`` does (within their document when doc-scoped),
    unlabelled ones (out-of-pack) across the whole index. With a ``cosine`` filter, each question's best
    cosine (the gate's score) is recorded too; with ``topic`` (question -> admitted?), the topic gate's verdict.
    With ``cosine_keep`` (and ``cosine``), a candidate whose cosine reaches it scores +inf: an ask keeps it
    whatever the filter scores it (``filter.cosine_keep``; ``ScoredQuestion.rescued``); with
    ``cosine_floor``, one under it scores -inf (``filter.cosine_floor``: never kept by the filter). With
    ``gate_coverage``, a question one of whose candidates holds that share of its words (the scope the answer
    step reads, ``opening_words`` of its document included; its words weighed by ``rarity`` when the pack
    weighs them so) passes any gate, as in an ask. With ``relative`` (``filter.relative_to_best``) or
    ``rank_prior`` (``filter.rank_prior``), the scores of the candidates the model scores in an ask (those
    cosine_keep / cosine_floor leave undecided) are read in their question (:func:`app.filters.read_scores`: against
    the best of them, and by their place in retrieval's list), as in an ask."""
    out = []
    for q in questions:
        passages = retriever.search(q["question"], k, doc=scope(q) if labelled else None)
        scores = [float(s) for s in filt.score(q["question"], passages)] if passages else []
        gold = [labelled and holds_evidence(p, q) for p in passages]
        cosines = cosine.score(q["question"], passages) if cosine is not None and passages else None
        best = max(cosines) if cosines is not None else None
        own = rescued = None
        if cosines is not None and (cosine_floor is not None or cosine_keep is not None):
            # The model's ranking of every candidate, read as the threshold reads them (the AUC of the model, as if
            # cosine decided none); calibration scores them all, an ask only those cosine leaves undecided.
            own = read_scores(scores, relative_to_best=relative, rank_prior=rank_prior)
        if (relative or rank_prior) and scores:
            decided = (cosine_decides(cosines, cosine_keep, cosine_floor) if cosines is not None
                       else [None] * len(scores))
            undecided = [i for i, d in enumerate(decided) if d is None]
            read = read_scores([scores[i] for i in undecided], undecided, relative_to_best=relative,
                               rank_prior=rank_prior)
            for i, v in zip(undecided, read):
                scores[i] = v
        if cosines is not None and cosine_floor is not None:
            scores = [-math.inf if c < cosine_floor else s for s, c in zip(scores, cosines)]
        if cosines is not None and cosine_keep is not None:
            rescued = [c >= cosine_keep for c in cosines]
        covered = gate_coverage is not None and best_coverage(q["question"], passages, opening_words,
                                                              rarity) >= gate_coverage
        out.append(ScoredQuestion(q, scores, gold, best, topic(q["question"]) if topic else True, own, covered,
                                  rescued))
        if progress:
            progress()
    return out


def calibrate(assistant, questions: Sequence[dict], *, kind: str | None = None, k: int | None = None,
              keep: float = 0.95, out_of_pack: Sequence[dict] = (), gate_max_false: float | None = None,
              cosine_keep: float | None = None, cosine_floor: float | None = None,
              relative: float | None = None, rank_prior: float | None = None,
              progress: Callable[[], None] | None = None) -> Calibration:
    """Score the pack's retrieval candidates for dev questions and choose the filter threshold; with
    ``gate_max_false``, first the gate (at most that share of answerable questions gated), then the
    threshold that keeps ``keep`` of all gold passages given the gate; with ``cosine_keep``, the threshold
    given that passages of at least that cosine are kept anyway (``filter.cosine_keep``); with ``cosine_floor``,
    given that passages under that cosine are dropped anyway (``filter.cosine_floor``); with ``relative``, given that
    each score is read against the question's best (``filter.relative_to_best``; None: the pack's); with
    ``rank_prior``, given each score's place in retrieval's list (``filter.rank_prior``; None: the pack's)."""
    pack = assistant.pack
    kind = kind or pack.config.filter.kind
    if kind == "none" and gate_max_false is None:
        raise SlmragError("filter.kind is 'none': there is no threshold to calibrate. Pass --kind cosine (or "
                          "cross_encoder / slm_judge), or --gate to choose only the question gate in front of "
                          "'none' (every passage of a question that passes it is kept).")
    assistant.load(generator=kind == "slm_judge")
    k = k or pack.config.retrieval.k
    filt = assistant.relevance_filter(kind)
    if (cosine_keep is not None or cosine_floor is not None) and kind in ("cosine", "none"):
        raise SlmragError("--cosine-keep and --cosine-floor back a trained filter with cosine; with --kind "
                          f"{kind} they change nothing. Pass --kind cross_encoder (or slm_judge).")
    if (relative or rank_prior) and kind in ("cosine", "none"):
        option = "--relative-to-best" if relative else "--rank-prior"
        raise SlmragError(f"{option} reads a trained filter's probabilities in their question; --kind {kind} scores "
                          "none. Pass --kind cross_encoder (or slm_judge), or leave it out.")
    cosine = assistant.relevance_filter("cosine") if gate_max_false is not None or cosine_keep is not None \
        or cosine_floor is not None else None
    # The pack's topic gate stands in front of every filter kind, as in an ask: its verdicts count too.
    topic_threshold = assistant.filter_choice().topic
    topic = None
    if topic_threshold is not None:
        gate_model = assistant.topic_gate
        topic = lambda q: gate_model.score(assistant.embedder.encode_query(q)) >= topic_threshold  # noqa: E731
    # The pack's gate_coverage lets a question whose words a candidate holds past the gate, as in an ask; the
    # gate itself is still chosen from the answerable questions' cosine alone.
    passing = {"gate_coverage": pack.config.filter.gate_coverage,
               "opening_words": pack.config.answers.grounding.opening_words,
               "rarity": assistant.word_rarity()} if gate_max_false is not None else {}
    # Scores read against the question's best as an ask reads them (the pack's share unless given); the threshold
    # is chosen on those.
    if relative is None:
        relative = pack.config.filter.relative_to_best if kind not in ("cosine", "none") else 0.0
    if rank_prior is None:
        rank_prior = pack.config.filter.rank_prior if kind not in ("cosine", "none") else 0.0
    scored = score_questions(filt, assistant.retriever, questions, k, cosine=cosine, topic=topic,
                             cosine_keep=cosine_keep, cosine_floor=cosine_floor, progress=progress,
                             relative=relative, rank_prior=rank_prior, **passing)
    gate = None
    if gate_max_false is not None:
        gate = choose_gate([q.best_cosine for q in scored if any(q.gold)], max_false=gate_max_false)
    if not any(any(q.gold) for q in scored):
        raise SlmragError("No gold passage was retrieved for any calibration question, so no threshold can be "
                          "chosen; check that the questions' 'doc' files are in the pack's index.")
    oop = score_questions(filt, assistant.retriever, out_of_pack, k, labelled=False, cosine=cosine, topic=topic,
                          cosine_keep=cosine_keep, cosine_floor=cosine_floor, progress=progress,
                          relative=relative, rank_prior=rank_prior, **passing) if out_of_pack else []
    cal = Calibration(kind, math.nan, keep, scored, oop, gate, topic_threshold, cosine_keep, cosine_floor, relative,
                      rank_prior)
    # Gold passages lost to the gate (or the floor) count against ``keep``, as an ask would lose them.
    cal.threshold = cal.threshold_for(keep)
    return cal
