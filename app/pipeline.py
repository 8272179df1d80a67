"""The question-answering pipeline of one pack: retrieve -> filter -> budget -> prompt -> stream.

:class:`Assistant` is built once per pack (cheap constructor, heavy loading in :meth:`Assistant.load`)
and reused across questions; :meth:`Assistant.ask` returns an :class:`AnswerStream` that yields tokens
as they are generated and then gives the full :class:`Answer` with citations and timings.
"""

from __future__ import annotations

import dataclasses
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from app.embedder import Embedder
from app.errors import InputError
from app.filters import make_filter
from app.generators import make_generator
from app.packs import Pack
from app.retrieval import Passage, Retriever
from app.store import IndexStore

# Chat-template markers around each message's content (role names, start/end tokens): SmolLM2's
# template adds 5; a little more covers other templates.
_TEMPLATE_TOKENS_PER_MESSAGE = 8

MAX_QUESTION_CHARS = 2000
_CITE = re.compile(r"\[(\d{1,2})\]")
# Chat-template control sequences: a document must not be able to close the user turn and speak as the
# system or the assistant, so they are defanged wherever they appear in passage text.
_CONTROL_TOKENS = re.compile(r"<\|[^|>]{0,40}\|>|<(/?)(s|im_start|im_end|system|assistant|user)>", re.IGNORECASE)


def clean_question(question: str) -> str:
    if question is None:
        raise InputError("The question is empty; type a question about your documents.")
    text = "".join(ch for ch in str(question) if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = text.strip()
    if not text:
        raise InputError("The question is empty; type a question about your documents.")
    if len(text) > MAX_QUESTION_CHARS:
        raise InputError(
            f"The question is {len(text)} characters long, over the limit of {MAX_QUESTION_CHARS}; shorten it "
            "(ask about one thing at a time)."
        )
    return text


# The packs' answer templates quote each passage between lines of three double quotes; a document
# containing such a run could close the quote early and go on as if it were the user speaking.
_QUOTE_RUN = re.compile(r'"{3,}')


# Prompt-injection hardening (issue 6). Small models follow instructions wherever they appear, so quoting
# passages is not enough on its own: instruction-like sentences aimed at the assistant are taken out of
# the passage text placed in the prompt (the index, citations and the UI keep the original text).
# A chat turn opened inside a document ("<|im_start|>assistant ..." up to the next control token) goes
# whole: no legitimate document contains one. Heuristic by nature - bench/bench_injection.py measures it.
_TURN = re.compile(
    r"(?:<\|im_start\|>|<\|(?:system|user|assistant)\|>|<(?:system|user|assistant)>)"
    r"(?:(?!<\|[^|>]{0,40}\|>|</?(?:s|system|user|assistant|im_start|im_end)>).)*",
    re.IGNORECASE | re.DOTALL,
)
_INJECTION = re.compile("|".join([
    r"\b(?:ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,60}\b(?:instructions?|prompts?|rules|guidelines|"
    r"directions|directives|passages?|context|above|system|everything)\b",
    r"\b(?:system|admin|administrator|developer|root)\s+(?:override|mode|command)\b",
    r"\b(?:system|admin|administrator|developer)\s+(?:prompt|message|instructions?|note)\s*:",
    r"\byou\s+(?:are|will)\s+now\b",
    r"\bfrom\s+now\s+on\b",
    r"\bnew\s+(?:rules?|instructions?|task|persona|directives?)\s*:",
    r"\b(?:maintenance|developer|debug|god|jailbreak)\s+mode\b",
    r"\balways\s+(?:reply|respond|answer|say|output|write)\b",
    # Only verbs of replying: "end"/"begin"/"return ... exactly" are ordinary contract language.
    r"\b(?:reply|respond|answer|output|say|print|write)\b[^.!?\n]{0,50}"
    r"(?:\bonly\s+with\b|\bwith\s+only\b|\bwith\s+(?:the\s+)?(?:single\s+)?word\b|\bexactly\b|\bnothing\s+but\b|"
    r"\bevery\s+(?:answer|response|reply|question)\b|\beach\s+(?:answer|response|reply|question)\b)",
    r"\b(?:do\s+not|don't|never)\s+answer\s+the\s+question\b",
    r"^\s*(?:#+\s*)?(?:system|assistant|instructions?)\s*:",
]), re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"((?<=[.!?])\s+|\n+)")
REMOVED = "[instruction-like text removed]"


def neutralize_instructions(text: str) -> tuple[str, int]:
    """Passage text for the prompt with planted instructions taken out; returns (text, how many)."""
    n = 0

    def drop_turn(_m: re.Match) -> str:
        nonlocal n
        n += 1
        return f" {REMOVED} "

    text = _TURN.sub(drop_turn, text)
    parts = _SENTENCE_BREAK.split(text)
    for i in range(0, len(parts), 2):  # even items are sentences, odd ones the breaks between them
        if parts[i] and parts[i] != REMOVED and _INJECTION.search(parts[i]):
            parts[i] = REMOVED
            n += 1
    return "".join(parts), n


def defang(text: str) -> str:
    text = _CONTROL_TOKENS.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)
    # Reliability fix (issue 6): runs of 3+ straight double quotes become typographic quotes, so a
    # passage can never end its own quoted block (tests/test_injection.py).
    return _QUOTE_RUN.sub(lambda m: "\u201d" * len(m.group(0)), text)


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

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "citations": self.citations,
            "passages": [p.to_json() for p in self.passages],
            "abstained": self.abstained,
            "disclaimer": self.disclaimer,
            "timings": self.timings,
        }


@dataclass
class AskOptions:
    k: int | None = None
    threshold: float | None = None
    max_tokens: int | None = None
    doc: str | None = None
    filter: str | None = None  # override the pack's filter kind


class AnswerStream:
    """Iterate for tokens; then :attr:`answer` holds the complete :class:`Answer`."""

    def __init__(self, assistant: "Assistant", question: str, options: AskOptions):
        self.assistant = assistant
        self.question = clean_question(question)
        self.options = options
        self.timings: dict[str, float | None] = {}
        t_load = time.perf_counter()
        assistant.load()  # no-op once loaded; a cold start is reported apart from the answer's own time
        self.timings["load_s"] = round(time.perf_counter() - t_load, 4)
        self.t0 = time.perf_counter()
        self.passages, self.context = assistant.retrieve_and_filter(self.question, options, self.timings)
        self.abstained = not self.context
        self.max_tokens = options.max_tokens
        if self.context:
            self.context, self.max_tokens = assistant.fit_window(self.question, self.context, options.max_tokens)
        self.answer: Answer | None = None
        self._parts: list[str] = []

    def __iter__(self) -> Iterator[str]:
        a = self.assistant
        n_tokens = 0
        first = None
        t_gen = time.perf_counter()
        if self.abstained:
            text = a.pack.prompts.render("abstain", question=self.question,
                                         nearest=[{**_cite_dict(i + 1, p), "source": p.name}
                                                  for i, p in enumerate(self.passages[:3])])
            first = time.perf_counter()
            self._parts.append(text)
            yield text
        else:
            for piece in a.generator.stream(a.messages(self.question, self.context),
                                            max_tokens=self.max_tokens):
                if first is None:
                    first = time.perf_counter()
                n_tokens += 1
                self._parts.append(piece)
                yield piece
        end = time.perf_counter()
        text = "".join(self._parts).strip()
        if not self.abstained:
            text = _drop_invalid_citations(text, len(self.context))
        self.timings["first_token_s"] = round((first or end) - self.t0, 4)
        self.timings["total_s"] = round(end - self.t0, 4)
        gen_s = end - (first or t_gen)
        self.timings["tokens"] = n_tokens
        self.timings["tokens_per_s"] = round((n_tokens - 1) / gen_s, 2) if n_tokens > 1 and gen_s > 0 else None
        self.answer = Answer(self.question, text, self.abstained, self._citations(text), self.passages,
                             self.context, a.pack.disclaimer, dict(self.timings))

    def _citations(self, text: str) -> list[dict]:
        if self.abstained:
            return []
        used = sorted({int(n) for n in _CITE.findall(text) if 1 <= int(n) <= len(self.context)})
        numbers = used or list(range(1, len(self.context) + 1))
        return [_cite_dict(n, self.context[n - 1]) for n in numbers]

    def run(self) -> Answer:
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer


def _cite_dict(n: int, p: Passage) -> dict:
    return {"n": n, "source": p.source, "name": p.name, "page": p.page, "heading": p.heading, "text": p.text}


def _drop_invalid_citations(text: str, n: int) -> str:
    return _CITE.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= n else "", text)


class Assistant:
    def __init__(self, pack: Pack):
        self.pack = pack
        cfg = pack.config
        self.embedder = Embedder(cfg.embedder, pack.path)
        self.generator = make_generator(cfg.generator, pack.path)
        self.store = IndexStore(pack.index_dir)
        self.snapshot = None
        self.retriever: Retriever | None = None
        self._filters: dict[str, object] = {}

    # ------------------------------------------------------------------ loading
    def load(self, generator: bool = True) -> "Assistant":
        self.embedder.load_query()
        if self.retriever is None:
            self.refresh()
        if generator:
            self.generator.load()
        return self

    def refresh(self) -> bool:
        """Pick up a newer index generation written by an ingest since we loaded; True if it changed."""
        if self.snapshot is not None and self.store.generation() == self.snapshot.generation:
            return False
        self.snapshot = self.store.snapshot()
        if self.snapshot.embedder and self.snapshot.embedder != self.embedder.identity:
            from app.errors import IndexError_

            raise IndexError_(
                f"{self.store.path} was built with '{self.snapshot.embedder}' but pack '{self.pack.name}' uses "
                f"'{self.embedder.identity}'; delete the index folder and ingest again."
            )
        self.retriever = Retriever(self.snapshot, self.embedder, self.pack.config.retrieval, self.pack.expansions)
        self._filters.clear()
        return True

    def relevance_filter(self, kind: str | None = None):
        kind = kind or self.pack.config.filter.kind
        if kind not in self._filters:
            self._filters[kind] = make_filter(kind, embedder=self.embedder, snapshot=self.snapshot,
                                              generator=self.generator, index_dir=self.pack.index_dir)
        return self._filters[kind]

    # ------------------------------------------------------------------ steps
    def retrieve_and_filter(self, question: str, options: AskOptions, timings: dict) -> tuple[list[Passage], list[Passage]]:
        if self.retriever is None:
            self.load(generator=False)
        self.refresh()
        fcfg = self.pack.config.filter
        t = time.perf_counter()
        passages = self.retriever.search(question, options.k, doc=options.doc)
        timings["retrieve_s"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        kind = options.filter or fcfg.kind
        threshold = fcfg.threshold if options.threshold is None else options.threshold
        scores = self.relevance_filter(kind).score(question, passages) if passages else []
        for p, s in zip(passages, scores):
            p.filter_score = s
            p.kept = kind == "none" or s >= threshold
        if fcfg.min_keep and passages:
            for p in sorted(passages, key=lambda p: -(p.filter_score or 0))[: fcfg.min_keep]:
                p.kept = True
        timings["filter_s"] = round(time.perf_counter() - t, 4)
        kept = sorted((p for p in passages if p.kept), key=lambda p: -(p.filter_score or 0))
        return passages, self.budget(kept)

    def budget(self, passages: list[Passage]) -> list[Passage]:
        """Keep passages (best first) while they fit the pack's context token budget."""
        limit = self.pack.config.filter.max_context_tokens
        out, used = [], 0
        for p in passages:
            n = self.embedder.count_tokens(p.text)  # cheap fast tokenizer; close to the generator's count
            if out and used + n > limit:
                break
            out.append(p)
            used += n
        return out

    def prompt_tokens(self, messages: list[dict]) -> int:
        # The generator's own tokenizer, plus a few tokens per message for the chat template's markers.
        return sum(self.generator.count_tokens(m["content"]) + _TEMPLATE_TOKENS_PER_MESSAGE for m in messages)

    def fit_window(self, question: str, context: list[Passage], max_tokens: int | None) -> tuple[list[Passage], int]:
        """Make prompt + answer fit the generator's context window (``generator.n_ctx``).

        The passage budget is counted with the embedder's tokenizer, which can undercount the generator's
        tokens several-fold on figures and legal boilerplate; a prompt over the window is an error from
        the backend. So: drop the weakest passages (they come best first) until it fits; if one passage
        alone does not, cut its text; only then shorten the answer (never below 32 tokens)."""
        n_ctx = self.pack.config.generator.n_ctx
        want = max_tokens or self.pack.config.generator.max_tokens
        ctx = list(context)
        used = self.prompt_tokens(self.messages(question, ctx))
        while used + want > n_ctx and len(ctx) > 1:
            ctx.pop()
            used = self.prompt_tokens(self.messages(question, ctx))
        if used + want > n_ctx:
            p = ctx[0]
            own = max(1, self.generator.count_tokens(p.text))
            room = own - (used + want - n_ctx)
            if room > 32:
                ctx[0] = dataclasses.replace(p, text=p.text[: int(len(p.text) * room / own * 0.9)].rstrip() + " ...")
                used = self.prompt_tokens(self.messages(question, ctx))
        if used + want > n_ctx:
            want = n_ctx - used
            if want < 32:
                raise InputError(f"The question is too long for the generator's context window ({n_ctx} tokens, "
                                 f"generator.n_ctx); shorten it, or raise n_ctx in the pack.")
        return ctx, want

    def messages(self, question: str, context: list[Passage]) -> list[dict]:
        info = {"title": self.pack.config.title, "domain": self.pack.config.domain, "name": self.pack.name}
        # Everything taken from a document is defanged: the text, and (reliability fix) its section heading
        # and file name, which the templates print outside the quoted block.
        passages = [{"n": i + 1, "source": defang(p.name), "page": p.page,
                     "heading": defang(neutralize_instructions(p.heading)[0]),
                     "text": defang(neutralize_instructions(p.text)[0])} for i, p in enumerate(context)]
        system = self.pack.prompts.render("system", pack=info)
        user = self.pack.prompts.render("answer", question=defang(question), passages=passages, pack=info)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def ask(self, question: str, options: AskOptions | None = None) -> AnswerStream:
        return AnswerStream(self, question, options or AskOptions())


def ensure_index(pack: Pack, progress=None) -> bool:
    """Ingest the pack's starter corpus if its index does not exist yet; True if it ingested."""
    store = IndexStore(pack.index_dir)
    if store.exists() and store.generation() > 0:
        return False
    corpus = pack.corpus_path
    if not Path(corpus).is_dir():
        return False
    from ingest.pipeline import Ingestor

    Ingestor(pack).ingest([corpus], progress=progress)
    return True
