"""The question-answering path of one pack, stage by stage: retrieve -> filter -> build prompt -> generate.

:class:`Assistant` is built once per pack (cheap constructor, heavy loading in :meth:`Assistant.load`)
and may be shared by many threads (the UI serves several browser sessions from one process).
:meth:`Assistant.ask` runs the stages in order and returns an :class:`~app.answer.AnswerStream`, which
only streams the generator's tokens and assembles the :class:`~app.answer.Answer`.

Concurrency: the index is read through an immutable :class:`IndexView` (snapshot + retriever + the
filters built on it). :meth:`Assistant.refresh` builds a new view and swaps it in under a lock; an ask
takes the current view once at its start, so it sees one index snapshot from retrieval to citations even
while an ingest lands and another session refreshes. Generation goes through :attr:`Assistant.queue`
(:mod:`app.queueing`): ``generator.concurrency`` answers at a time, the others wait in arrival order and
learn their place through ``ask(..., on_position=)``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from app.answer import AnswerStream
from app.answers.grounding import WordRarity, best_coverage
from app.answers.shapes import route
from app.embedder import Embedder
from app.errors import IndexDamaged
from app.filters import cosine_decides, make_filter, read_scores
from app.filters.cross_encoder import doc_label
from app.generators import make_generator
from app.packs import Pack
from app.prompting import PromptBuilder, clean_question
from app.queueing import AnswerQueue, PositionCallback
from app.retrieval import Passage, Retriever
from app.store import IndexSnapshot, IndexStore


@dataclass
class AskOptions:
    k: int | None = None
    threshold: float | None = None
    max_tokens: int | None = None
    doc: str | None = None
    filter: str | None = None  # override the pack's filter kind


@dataclass(frozen=True)
class FilterChoice:
    """The relevance filter an ask uses: the pack's, unless the ask overrides kind or threshold."""

    kind: str
    threshold: float
    min_keep: int
    gate: float | None = None  # question-level cosine floor (FilterSettings.gate); None: no gate
    gate_coverage: float | None = None  # question coverage that passes the gate too (FilterSettings.gate_coverage)
    topic: float | None = None  # the topic gate's threshold (FilterSettings.topic_threshold); None: no topic gate
    cosine_keep: float | None = None  # cosine that keeps a passage whatever a trained filter says (FilterSettings)
    cosine_floor: float | None = None  # cosine under which a trained filter keeps no passage (FilterSettings)
    order: str = "filter"  # the order kept passages reach the prompt in (FilterSettings.order)
    relative_to_best: float = 0.0  # share of the question's best log-odds taken out of each score (FilterSettings)
    rank_prior: float = 0.0  # log-odds taken off each score per place down retrieval's list (FilterSettings)

    def to_json(self) -> dict:
        out = {"kind": self.kind, "threshold": self.threshold, "min_keep": self.min_keep, "gate": self.gate}
        if self.gate is not None and self.gate_coverage is not None:
            out["gate_coverage"] = self.gate_coverage
        return out | ({"topic_threshold": self.topic} if self.topic is not None else {}) | (
            {"cosine_keep": self.cosine_keep} if self.cosine_keep is not None else {}) | (
            {"cosine_floor": self.cosine_floor} if self.cosine_floor is not None else {}) | (
            {"order": self.order} if self.order != "filter" else {}) | (
            {"relative_to_best": self.relative_to_best} if self.relative_to_best else {}) | (
            {"rank_prior": self.rank_prior} if self.rank_prior else {})


@dataclass
class Retrieval:
    """Stages 1-2 for one question: every candidate (with its filter score and verdict) and the kept ones,
    best first, trimmed to the pack's context budget."""

    question: str
    passages: list[Passage]
    kept: list[Passage]
    filter: FilterChoice
    timings: dict = field(default_factory=dict)
    gate_score: float | None = None  # the best cosine among the candidates, when the pack has a gate
    topic_score: float | None = None  # P(the question is this pack's), when the pack has a topic gate
    coverage_score: float | None = None  # the best question coverage of a candidate, when the gate asked for it

    @property
    def gated(self) -> bool:
        """The gate turned the question away: no candidate reached it in cosine, nor covered the question's
        words at ``gate_coverage``."""
        if self.gate_score is None or self.filter.gate is None or self.gate_score >= self.filter.gate:
            return False
        return self.coverage_score is None or self.coverage_score < (self.filter.gate_coverage or 0.0)

    def filter_json(self) -> dict:
        """What the answer reports of its filtering: the choice, and the gates' verdicts when there are any."""
        out = self.filter.to_json()
        if self.gate_score is not None:
            out |= {"gate_score": self.gate_score, "gated": self.gated}
            if self.coverage_score is not None:
                out["coverage_score"] = self.coverage_score
        if self.topic_score is not None:
            out |= {"topic_score": self.topic_score, "off_topic": self.topic_score < (self.filter.topic or 0.0)}
        return out


class IndexView:
    """One index snapshot with the retriever and filters built on it; never changes once built."""

    def __init__(self, snapshot: IndexSnapshot, retriever: Retriever):
        self.snapshot = snapshot
        self.retriever = retriever
        self._filters: dict[str, object] = {}
        self._rarity: WordRarity | None = None
        self._lock = threading.Lock()

    def relevance_filter(self, kind: str, assistant: "Assistant"):
        if kind == "cross_encoder" and assistant.pack.config.filter.model:
            return assistant.relevance_model  # the pack's own model reads no index: one for every view
        with self._lock:
            if kind not in self._filters:
                cfg = assistant.pack.config.filter
                self._filters[kind] = make_filter(kind, embedder=assistant.embedder, snapshot=self.snapshot,
                                                  generator=assistant.generator, index_dir=assistant.pack.index_dir,
                                                  model_dir=assistant.pack.path / cfg.model if cfg.model else None,
                                                  precision=cfg.precision, read_tokens=cfg.read_tokens)
            return self._filters[kind]

    def word_rarity(self) -> WordRarity:
        """How rare each word is among this snapshot's documents (names, headings, texts), for
        ``grounding.question_words: rarity``; counted on first use (~0.5 s per 2 MB of text), then kept."""
        with self._lock:
            if self._rarity is None:
                texts: dict[str, list[str]] = {}
                for c in self.snapshot.chunks:
                    texts.setdefault(c.doc_id, []).append(f"{c.heading} {c.text}")
                names = {d: r.name for d, r in self.snapshot.documents.items()}
                self._rarity = WordRarity.of_documents(
                    f"{doc_label(names.get(d, ''))} {' '.join(parts)}" for d, parts in texts.items())
            return self._rarity


def _filter_rank(p) -> tuple:
    """The order kept passages reach the prompt in with ``filter.order: filter``, best first: those cosine keeps
    (``filter.cosine_keep``: the question's closest by embedding, not scored by the model) by their cosine, then
    the rest by the filter's score."""
    if p.extra.get("kept_by") == "cosine":
        return (0, -p.extra["cosine"])
    return (1, -(p.filter_score or 0))


def _best_first(passages: list[Passage], order: str, candidates: list[Passage], cosines) -> list[Passage]:
    """``passages`` (some of ``candidates``) in the order they reach the prompt: by the filter's ranking
    (:func:`_filter_rank`), or with ``filter.order: cosine`` by each candidate's cosine (``cosines``, aligned with
    ``candidates``), whichever filter chose them; sorting is stable, so ties keep retrieval's order."""
    if order == "cosine" and cosines is not None:
        cosine = {id(p): float(c) for p, c in zip(candidates, cosines)}
        return sorted(passages, key=lambda p: -cosine[id(p)])
    return sorted(passages, key=_filter_rank)


class Assistant:
    def __init__(self, pack: Pack, queue: AnswerQueue | None = None):
        """``queue``: where answers wait for the generator; by default one of the pack's
        ``generator.concurrency``. Pass a shared one when several packs' models share the same cores."""
        self.pack = pack
        cfg = pack.config
        self.queue = queue or AnswerQueue(cfg.generator.concurrency)
        self.embedder = Embedder(cfg.embedder, pack.path)
        self.generator = make_generator(cfg.generator, pack.path)
        self.store = IndexStore(pack.index_dir)
        self.prompts = PromptBuilder(pack, self.generator, self.embedder)
        self._view: IndexView | None = None
        self._label_prior: dict[str, float] | None = None
        self._answer_models: dict[str, object] = {}  # the label reader, the sentence selector, the topic gate
        self._lock = threading.Lock()
        self._prior_lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    def load(self, generator: bool = True) -> "Assistant":
        self.embedder.load_query()
        if self._view is None:
            self.refresh()
        _ = self.topic_gate  # a few KB; a broken one is reported at load, not on the first question
        if generator:
            self.generator.load()
            _ = self.label_reader, self.sentence_selector, self.label_selector  # when the pack has them: a cold start is not an answer's latency
            if self.pack.config.filter.kind == "cross_encoder":
                # The pack's relevance model too (an int8 one is exported to ONNX once, ~12 s): at load, not
                # in a question, and not while other threads answer with torch models.
                _ = self.relevance_model
        return self

    def refresh(self) -> bool:
        """Pick up a newer index generation written by an ingest since we loaded; True if it changed."""
        with self._lock:
            current = self._view
            if current is not None and self.store.generation() == current.snapshot.generation:
                return False
            snapshot = self.store.snapshot(settings=self.pack.config.index)
            if snapshot.embedder and snapshot.embedder != self.embedder.identity:
                raise IndexDamaged(
                    f"{self.store.path} was built with '{snapshot.embedder}' but pack '{self.pack.name}' uses "
                    f"'{self.embedder.identity}'; delete the index folder and ingest again."
                )
            retriever = Retriever(snapshot, self.embedder, self.pack.config.retrieval, self.pack.expansions)
            self._view = IndexView(snapshot, retriever)  # one assignment: readers see the old view or the new
            return True

    @property
    def view(self) -> IndexView:
        if self._view is None:
            self.load(generator=False)
        return self._view

    @property
    def snapshot(self) -> IndexSnapshot | None:
        return self._view.snapshot if self._view is not None else None

    @property
    def retriever(self) -> Retriever:
        return self.view.retriever

    def relevance_filter(self, kind: str | None = None):
        return self.view.relevance_filter(kind or self.pack.config.filter.kind, self)

    def filter_choice(self, options: AskOptions | None = None) -> FilterChoice:
        """The one place where the pack's filter settings and an ask's overrides are combined."""
        cfg = self.pack.config.filter
        options = options or AskOptions()
        kind = options.filter or cfg.kind
        # An ask with --filter none skips every filtering step, the gates included; a pack whose filter.kind is
        # none may still gate questions (keep every passage of a question that belongs here, none of one that
        # does not).
        ungated = options.filter == "none"
        # cosine_keep, cosine_floor and order back a trained filter with cosine: kind none keeps every passage in
        # retrieval's order, and cosine is its own floor, keep and order
        trained = kind not in ("none", "cosine")
        return FilterChoice(kind=kind,
                            threshold=cfg.threshold if options.threshold is None else float(options.threshold),
                            min_keep=cfg.min_keep, gate=None if ungated else cfg.gate,
                            gate_coverage=None if ungated else cfg.gate_coverage,
                            topic=None if ungated or not cfg.topic_model else cfg.topic_threshold,
                            cosine_keep=cfg.cosine_keep if trained else None,
                            cosine_floor=cfg.cosine_floor if trained else None,
                            order=cfg.order if trained else "filter",
                            relative_to_best=cfg.relative_to_best if trained else 0.0,
                            rank_prior=cfg.rank_prior if trained else 0.0)

    @property
    def relevance_model(self):
        """The pack's own relevance model (``filter.model``), loaded once and shared by every index view: it
        does not depend on the index, so an ingest does not make the next question load it again; None when the
        pack has none."""
        cfg = self.pack.config.filter
        return self._pack_model("filter.model", cfg.model,
                                lambda path: make_filter("cross_encoder", embedder=self.embedder, model_dir=path,
                                                         precision=cfg.precision, read_tokens=cfg.read_tokens))

    @property
    def topic_gate(self):
        """The pack's topic gate (``filter.topic_model``), loaded on first use; None when the pack has none."""
        from app.filters.topic import TopicGate

        cfg = self.pack.config
        return self._pack_model("topic_model", cfg.filter.topic_model,
                                lambda path: TopicGate(path, cfg.embedder.model))

    @property
    def label_reader(self):
        """The pack's label reader (``answers.label_reader``), loaded on first use; None when the pack has none."""
        from app.answers.reader import LabelReader

        return self._pack_model("label_reader", self.pack.config.answers.label_reader,
                                lambda path: LabelReader.from_folder(path, self.pack.config.answers.labels))

    @property
    def sentence_selector(self):
        """The pack's sentence selector (``answers.extract_selector``), loaded on first use; None when it has none."""
        from app.answers.selector import SentenceSelector

        return self._pack_model("extract_selector", self.pack.config.answers.extract_selector,
                                SentenceSelector.from_folder)

    @property
    def label_selector(self):
        """The pack's sentence selector for label answers' support (``answers.label_selector``), loaded on first
        use; None when it has none."""
        from app.answers.selector import SentenceSelector

        return self._pack_model("label_selector", self.pack.config.answers.label_selector,
                                lambda path: SentenceSelector.from_folder(path, "label"))

    def _pack_model(self, setting: str, folder: str | None, load):
        """A small model the pack ships (the pack-relative ``folder`` its ``setting`` names), loaded once."""
        if folder is None or setting in self._answer_models:  # loaded: no lock on the answer path
            return self._answer_models.get(setting)
        with self._prior_lock:
            if setting not in self._answer_models:
                self._answer_models[setting] = load(self.pack.path / folder).load()
            return self._answer_models[setting]

    def label_prior(self) -> dict[str, float] | None:
        """The labels' probabilities for a content-free prompt (computed once; see
        :func:`app.answers.compose.calibrated`); None when the backend cannot score labels."""
        with self._prior_lock:  # not the refresh lock: scoring takes a model evaluation
            if self._label_prior is None and self.generator.scores_choices:
                from app.answers.compose import label_choices
                from app.retrieval import Passage

                answers = self.pack.config.answers
                blank = Passage(vid=-1, doc_id="", source="", name="N/A", page=None, text="N/A", heading="", start=0, end=3)
                messages = self.prompts.messages("N/A", [blank], "label")
                self._label_prior = self.generator.next_token_choice(
                    self.generator.chat_prompt(messages), label_choices(list(answers.labels), answers.label_not_found))
            return self._label_prior

    # ------------------------------------------------------------------ stages
    def retrieve(self, question: str, options: AskOptions | None = None, *, view: IndexView | None = None) -> Retrieval:
        """Stages 1-2: hybrid retrieval, then the relevance filter; ``question`` must be clean."""
        options = options or AskOptions()
        if view is None:
            self.refresh()
            view = self.view
        choice = self.filter_choice(options)
        timings: dict = {}
        t = time.perf_counter()
        qvec = self._query_vector(question, choice, options)
        passages = view.retriever.search(question, options.k, doc=options.doc, query_vector=qvec)
        timings["retrieve_s"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        topical = self.judge(question, passages, choice, qvec, view)
        gate_score = coverage_score = None
        if choice.gate is not None and passages:
            gate_score = round(float(max(topical)), 4)
            if gate_score < choice.gate and choice.gate_coverage is not None:
                # under the gate in cosine; does a candidate (its document named as the answer step names it)
                # hold the question's words?
                g = self.pack.config.answers.grounding
                coverage_score = round(best_coverage(question, passages, g.opening_words, self.word_rarity(view)), 4)
        topic_score = None
        if choice.topic is not None and qvec is not None:
            topic_score = round(self.topic_gate.score(qvec), 4)
        off_topic = topic_score is not None and topic_score < choice.topic
        found = Retrieval(question, passages, [], choice, timings, gate_score, topic_score, coverage_score)
        if off_topic or found.gated:  # the question is not about these documents: no passage may stand, min_keep included
            for p in passages:
                p.kept = False
        elif choice.min_keep and passages:
            for p in _best_first(passages, choice.order, passages, topical)[: choice.min_keep]:
                p.kept = True
        timings["filter_s"] = round(time.perf_counter() - t, 4)
        kept = _best_first([p for p in passages if p.kept], choice.order, passages, topical)
        found.kept = self.prompts.budget(kept)
        return found

    def judge(self, question: str, passages: list[Passage], choice: FilterChoice, qvec=None,
              view: IndexView | None = None) -> list[float] | None:
        """Stage 2's per-passage part: each candidate's filter score and whether it is kept (``filter_score``,
        ``kept``, in place); returns the candidates' cosine when the gate, keep, floor or order needs it (else None).
        The question-level gates come after it in :meth:`retrieve`; ``bench/filter_cost.py`` times this."""
        view = view or self.view
        topical = None  # the candidates' cosine, for the gate, cosine_keep, cosine_floor and order: cosine
        if (choice.gate is not None or choice.cosine_keep is not None or choice.cosine_floor is not None
                or choice.order == "cosine") and passages:
            topical = view.relevance_filter("cosine", self).score(question, passages, query_vector=qvec)
        # A trained model behind cosine_keep / cosine_floor scores only the candidates cosine leaves undecided:
        # one at or over the keep is kept and one under the floor dropped whatever the model says, so scoring
        # them would only cost time (medical dev, top 10: about half of the candidates are undecided).
        decided = [None] * len(passages)  # per candidate: True kept by cosine, False dropped by it, None: the filter's
        if topical is not None and choice.kind not in ("none", "cosine"):
            decided = cosine_decides(topical, choice.cosine_keep, choice.cosine_floor)
        undecided = [p for p, d in zip(passages, decided) if d is None]
        if choice.kind == "cosine" and topical is not None:
            scores = iter(topical)
        else:
            own = view.relevance_filter(choice.kind, self).score(question, undecided, query_vector=qvec) \
                if undecided else []
            if choice.relative_to_best or choice.rank_prior:  # the threshold reads each score in its question
                for p, o in zip(undecided, own):
                    p.extra["model_score"] = round(float(o), 6)
                places = [i for i, d in enumerate(decided) if d is None]  # each one's place in retrieval's list
                own = read_scores(own, places, relative_to_best=choice.relative_to_best, rank_prior=choice.rank_prior)
            scores = iter(own)
        for i, (p, d) in enumerate(zip(passages, decided)):
            if d is None:
                p.filter_score = next(scores)
                p.kept = choice.kind == "none" or p.filter_score >= choice.threshold
                continue
            # Not scored by the model (filter_score None); its cosine says why it was kept or dropped.
            p.kept, p.extra["cosine"] = d, round(float(topical[i]), 4)
            # kept_by cosine: the trained model may not know this kind of document (a protocol, a clinical note,
            # for a model trained on abstracts); its embedding says it is on the question. dropped_by cosine:
            # off the question's topic by its embedding, whatever the model would say.
            p.extra["kept_by" if d else "dropped_by"] = "cosine"
        return topical

    def word_rarity(self, view: IndexView | None = None) -> WordRarity | None:
        """The index's word rarity (``view``'s, default the current) when the pack weighs the question's words
        by it (``grounding.question_words: rarity``), else None."""
        if self.pack.config.answers.grounding.question_words != "rarity":
            return None
        return (view or self.view).word_rarity()

    def _query_vector(self, question: str, choice: FilterChoice, options: AskOptions) -> np.ndarray | None:
        """The question embedded once, for the dense retriever, the cosine filter and the gate alike (None
        when none of them needs it)."""
        mode = self.pack.config.retrieval.mode
        if mode == "bm25" and choice.kind != "cosine" and choice.gate is None and choice.topic is None:
            return None
        return self.embedder.encode_query(question)

    def _answerable_documents(self, view, options: AskOptions) -> dict[str, str] | None:
        """What grounding.name_the_document checks the question against: the index's documents (doc id ->
        file name), unless the user chose one or the pack does not ask for the check (then nothing is built:
        this runs on every question)."""
        if options.doc or not self.pack.config.answers.grounding.name_the_document:
            return None
        return {d: r.name for d, r in view.snapshot.documents.items()}

    def ask(self, question: str, options: AskOptions | None = None, *,
            on_position: PositionCallback | None = None) -> AnswerStream:
        """Run retrieve -> filter -> build prompt now; the returned stream waits for its turn in
        :attr:`queue` and generates when iterated (``on_position(ahead)`` is called while it waits)."""
        options = options or AskOptions()
        question = clean_question(question)
        t_load = time.perf_counter()
        self.load()  # no-op once loaded; a cold start is reported apart from the answer's own time
        load_s = round(time.perf_counter() - t_load, 4)
        t0 = time.perf_counter()
        self.refresh()
        view = self.view  # one snapshot for the whole ask, whatever lands meanwhile
        found = self.retrieve(question, options, view=view)
        timings = {"load_s": load_s, **found.timings}
        answers = self.pack.config.answers
        shape = route(question, answers.route, answers.shapes, answers.default)
        documents = self._answerable_documents(view, options)
        prompt = self.prompts.build(question, found.kept, options.max_tokens, shape) if found.kept else None

        def abstain(nearest: list[Passage], reason: str) -> str:
            return self.pack.prompts.render("abstain", question=question, reason=reason, nearest=[
                {"n": i + 1, "source": p.name, "page": p.page, "text": p.text} for i, p in enumerate(nearest)])

        return AnswerStream(question=question, generator=self.generator, prompt=prompt, passages=found.passages,
                            abstain=abstain, answers=answers, disclaimer=self.pack.disclaimer, filter=found.filter_json(),
                            timings=timings, t0=t0, index_generation=view.snapshot.generation,
                            label_not_found=answers.label_not_found,
                            label_prior=self.label_prior if answers.label_calibration == "content_free" else None,
                            reader=self.label_reader, selector=self.sentence_selector,
                            label_selector=self.label_selector,
                            documents=documents,
                            same_table=view.retriever.same_table, rarity=self.word_rarity(view),
                            queue=self.queue, on_position=on_position)
