"""The SLM judge filter: the pack's generator says whether each passage is relevant to the question.

The score is P(yes) / (P(yes) + P(no)) of the generator's next token (no generation), through
:meth:`app.generators.Generator.yes_probability`; backends that cannot score from logits raise a
ConfigError that says which backend or filter kind to use instead.
"""

from __future__ import annotations

from typing import Sequence

from app.errors import ConfigError
from app.filters.cross_encoder import model_passage
from app.retrieval import Passage

JUDGE_INSTRUCTION = "Is this passage relevant to the question? Answer Yes or No."


class SLMJudgeFilter:
    """The generator judges each passage; the score is P(yes) / (P(yes) + P(no)) of its next token.

    The prompt puts the question *before* the passage (``question_first``), so the prompts of one
    question share the chat template and the question as a token prefix, which llama.cpp keeps in its
    KV cache between the sequential evaluations (see ``LlamaCppGenerator.yes_probability``). Passages
    are cut to ``max_passage_words`` so ten candidates stay affordable for a 135M model on 2 cores.
    """

    def __init__(self, generator, *, max_passage_words: int = 120, question_first: bool = True):
        if generator is None:
            raise ConfigError("The 'slm_judge' filter needs the pack's generator; none was given.")
        generator.require_choice_scoring()  # fail when the filter is built, not at the first question
        self.generator = generator
        self.max_passage_words = max_passage_words
        self.question_first = question_first

    def prompt(self, question: str, passage_text: str) -> str:
        words = passage_text.split()
        if len(words) > self.max_passage_words:
            passage_text = " ".join(words[: self.max_passage_words]) + " ..."
        if self.question_first:
            user = f"Question: {question}\nPassage: {passage_text}\n{JUDGE_INSTRUCTION}"
        else:
            user = f"Passage: {passage_text}\nQuestion: {question}\n{JUDGE_INSTRUCTION}"
        return self.generator.chat_prompt([{"role": "user", "content": user}])

    def score(self, question: str, passages: Sequence[Passage], *, query_vector=None) -> list[float]:
        if not passages:
            return []
        return self.generator.yes_probability([self.prompt(question, model_passage(p.text, p.name, p.heading))
                                               for p in passages])
