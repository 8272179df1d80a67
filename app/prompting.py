"""Prompt building: from the kept passages to the chat messages the generator reads.

One owner for everything that turns document text into prompt text: the question is cleaned, passage
text is defanged (no chat-control tokens, no closing of its own quoted block) and neutralised (planted
instructions taken out), the passages are trimmed to the pack's token budget, and the rendered prompt
plus the answer is made to fit the generator's context window.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass

from app.errors import InputError
from app.retrieval import Passage

# Chat-template markers around each message's content (role names, start/end tokens): SmolLM2's
# template adds 5; a little more covers other templates.
_TEMPLATE_TOKENS_PER_MESSAGE = 8

MAX_QUESTION_CHARS = 2000
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


def instruction_like(sentence: str) -> bool:
    """Whether the prompt would take ``sentence`` out as a planted instruction (:func:`neutralize_instructions`)."""
    return neutralize_instructions(sentence)[1] > 0


def defang(text: str) -> str:
    text = _CONTROL_TOKENS.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)
    # Runs of 3+ straight double quotes become typographic quotes, so a passage can never end its own
    # quoted block (tests/test_injection.py).
    return _QUOTE_RUN.sub(lambda m: "\u201d" * len(m.group(0)), text)


def safe_passage_text(text: str) -> str:
    """A document's text as it may appear inside a prompt: planted instructions out, control tokens defanged."""
    return defang(neutralize_instructions(text)[0])


@dataclass(frozen=True)
class Prompt:
    """What the generator is given: the messages, the passages they quote (numbered 1..n in this order)
    and how many tokens the answer may take so that both fit the context window."""

    messages: list[dict]
    context: list[Passage]
    max_tokens: int
    shape: str = "free"


class PromptBuilder:
    """Renders a pack's templates around the kept passages, within its token budget and the model's window."""

    def __init__(self, pack, generator, embedder):
        self.pack = pack
        self.generator = generator
        self.embedder = embedder

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

    def messages(self, question: str, context: list[Passage], shape: str = "free") -> list[dict]:
        info = {"title": self.pack.config.title, "name": self.pack.name}
        # Everything taken from a document is made safe: the text, and its section heading and file name,
        # which the templates print outside the quoted block.
        passages = [{"n": i + 1, "source": defang(p.name), "page": p.page,
                     "heading": safe_passage_text(p.heading), "text": safe_passage_text(p.text)}
                    for i, p in enumerate(context)]
        system = self.pack.prompts.render("system", pack=info)
        user = self.pack.prompts.render("answer", question=defang(question), passages=passages, pack=info,
                                        shape=shape, labels=list(self.pack.config.answers.labels))
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def prompt_tokens(self, messages: list[dict]) -> int:
        # The generator's own tokenizer, plus a few tokens per message for the chat template's markers.
        return sum(self.generator.count_tokens(m["content"]) + _TEMPLATE_TOKENS_PER_MESSAGE for m in messages)

    def build(self, question: str, context: list[Passage], max_tokens: int | None = None,
              shape: str = "free") -> Prompt:
        """Make prompt + answer fit the generator's context window (``generator.n_ctx``).

        The passage budget is counted with the embedder's tokenizer, which can undercount the generator's
        tokens several-fold on figures and legal boilerplate; a prompt over the window is an error from
        the backend. So: drop the weakest passages (they come best first) until it fits; if one passage
        alone does not, cut its text; only then shorten the answer (never below 32 tokens)."""
        n_ctx = self.pack.config.generator.n_ctx
        want = max_tokens or self.pack.config.generator.max_tokens
        ctx = list(context)
        used = self.prompt_tokens(self.messages(question, ctx, shape))
        while used + want > n_ctx and len(ctx) > 1:
            ctx.pop()
            used = self.prompt_tokens(self.messages(question, ctx, shape))
        if used + want > n_ctx and ctx:
            p = ctx[0]
            own = max(1, self.generator.count_tokens(p.text))
            room = own - (used + want - n_ctx)
            if room > 32:
                ctx[0] = dataclasses.replace(p, text=p.text[: int(len(p.text) * room / own * 0.9)].rstrip() + " ...")
                used = self.prompt_tokens(self.messages(question, ctx, shape))
        if used + want > n_ctx:
            want = n_ctx - used
            if want < 32:
                raise InputError(f"The question is too long for the generator's context window ({n_ctx} tokens, "
                                 f"generator.n_ctx); shorten it, or raise n_ctx in the pack.")
        return Prompt(self.messages(question, ctx, shape), ctx, want, shape)
