"""Write the answer in its shape, then check it against the passages it cites (grounded or silent).

:func:`compose` is the generation stage: it asks the generator for the answer the question's shape calls
for (:mod:`app.answers.shapes`), makes sure every answer cites a passage that exists, and runs the pack's
grounding check (:mod:`app.answers.grounding`). It returns a :class:`Composed`; whether an unsupported
answer is withheld or flagged is the pack's ``answers.grounding.on_unsupported``.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass, field

from app.answers.grounding import (Support, WordRarity, content_stems, lexical_support, passage_naming, passages_named,
                                   question_coverage)
from app.answers.shapes import (Shaped, best_sentence, calculate_from_table, date_from_term, finish_calculate,
                                finish_extract, finish_free, finish_label, label_from_reading, quote_for_model,
                                quote_selection, read_label, value_from_table)
from app.answers.dates import term_end
from app.answers.tables import read_tables, reads_tables
from app.settings import AnswerSettings

# The answer ends at a blank line or where a small model starts a new "Question:"/"Passages" block.
STOP = ["\n\n\n", "\nQuestion:", "\nPassages", "<|im_end|>"]
NOT_FOUND_CHOICE = "__not_found__"
# Most tokens per shape: a quote, a formula or a label's one supporting sentence is short; a small model
# asked for more keeps going (rambling is its commonest failure).
SHAPE_TOKENS = {"label": 60, "extract": 80, "calculate": 80}


@dataclass
class Composed:
    shaped: Shaped
    support: Support | None
    grounded: bool
    decided_by: str  # which check decided: "lexical", "verbatim", "none", "model" (the model said not found),
    # "document" (the question names none of the kept passages' documents, see GroundingSettings.name_the_document)
    timings: dict = field(default_factory=dict)
    added: list = field(default_factory=list)  # passages the answer cites beyond the prompt's (same_table), in order
    named: list | None = None  # per context passage: does the question name its document (name_the_document)

    @property
    def other_document(self) -> bool:
        """Withheld by the document check although the question names a document: the answer came from another."""
        return self.decided_by == "document" and any(self.named or [])


def _spellings(label: str) -> list[str]:
    return [label, label.capitalize(), label.upper(), " " + label, " " + label.capitalize()]


def label_choices(labels: list[str], with_not_found: bool) -> dict[str, list[str]]:
    choices = {lab: _spellings(lab) for lab in labels}
    if with_not_found:
        choices[NOT_FOUND_CHOICE] = ["I", " I"]  # "I could not find this in your documents."
    return choices


def calibrated(probs: dict[str, float], prior: dict[str, float] | None) -> dict[str, float]:
    """Contextual calibration (Zhao et al., 2021, "Calibrate before use"): divide each label's probability
    by the probability the model gives it for a content-free prompt (the same template with "N/A" for the
    question and passages), then renormalise - a small model's standing preference for one label ("no")
    no longer decides the answer."""
    if not prior:
        return probs
    raw = {k: v / max(prior.get(k, 0.0), 1e-4) for k, v in probs.items()}
    total = sum(raw.values()) or 1.0
    return {k: v / total for k, v in raw.items()}


def biased(probs: dict[str, float], bias: dict[str, float]) -> dict[str, float]:
    """Add each label's fitted log-offset (``answers.label_bias``, fitted on training rows by ``slmrag adapt
    labels``) to its log-probability and renormalise; a choice without an offset keeps its probability's share."""
    if not bias:
        return probs
    raw = {k: v * math.exp(bias.get(k, 0.0)) for k, v in probs.items()}
    total = sum(raw.values()) or 1.0
    return {k: v / total for k, v in raw.items()}


def label_probabilities(generator, prompt, labels: list[str], *, with_not_found: bool = False,
                        prior: dict[str, float] | None = None) -> dict[str, float]:
    """The labels' next-token probabilities after ``prompt``, contextually calibrated by ``prior`` (no
    fitted bias: :func:`biased` adds it), so that fitting the bias and answering score the same way."""
    choices = label_choices(labels, with_not_found)
    return calibrated(generator.next_token_choice(generator.chat_prompt(prompt.messages), choices), prior)


def compose(generator, prompt, question: str, settings: AnswerSettings, *, label_not_found: bool = False,
            label_prior: dict[str, float] | None = None, reader=None, selector=None, label_selector=None,
            documents: dict[str, str] | None = None, same_table=None, rarity: WordRarity | None = None,
            retrieved: list | None = None) -> Composed:
    """Generate, shape and check one answer for ``prompt`` (an :class:`app.prompting.Prompt`). ``reader``: the
    pack's label reader (:class:`app.answers.reader.LabelReader`), which then chooses 'label' answers;
    ``selector``: its sentence selector (:class:`app.answers.selector.SentenceSelector`), which then
    chooses the sentence an 'extract' answer quotes; ``label_selector``: one trained on the pack's label rows,
    which then chooses the sentence a reader's label quotes as its support. ``documents``: the documents the question could be
    answered from, doc id -> file name (the index's, or the one the user chose; default: those of the
    prompt's passages), for ``grounding.name_the_document``. ``same_table``: passages -> the other chunks of
    the tables they hold (:meth:`app.retrieval.Retriever.same_table`); a figure no kept chunk holds is then
    read off the rest of its statement, and that chunk is cited as one more passage (``Composed.added``).
    ``retrieved``: every passage retrieval found for the question, the filter's dropped ones too; what a cited
    document is about is read from all of its (:func:`_document_scopes`)."""
    texts, namings, scopes, doc_ids = _views(prompt.context, settings)
    doc_scopes = _document_scopes(prompt.context, scopes, retrieved, settings)
    # How much of the question a passage covers, for every check below (rarity: grounding.question_words)
    cover = functools.partial(question_coverage, question, rarity=rarity if settings.grounding.question_words == "rarity" else None)
    n = len(texts)
    timings: dict = {"tokens": 0}
    t0 = time.perf_counter()
    first: list[float] = []

    def run(**kwargs) -> str:
        parts = []
        for piece in generator.stream(prompt.messages, stop=STOP, **kwargs):
            if not first:
                first.append(time.perf_counter())
            timings["tokens"] += 1
            parts.append(piece)
        return "".join(parts)

    shape = prompt.shape
    named = _named(question, prompt.context, settings, documents)
    if named is not None and not any(named):
        # Several documents and the question names none of them: any answer would be one document's figure
        # given for a question that did not say which; nothing is generated.
        timings["first_token_s"] = timings["generate_s"] = time.perf_counter() - t0
        return Composed(Shaped(shape, ""), None, False, "document", timings)
    table, cell = read_tables(question, texts, shape, settings)
    added: list = []
    if table is None and cell is None and same_table is not None and reads_tables(shape, settings):
        # A statement split over chunks: the row may be in a part the retrieval did not keep. Read the whole
        # table; cite the parts used as passages n+1, ... (only those).
        more = same_table(list(prompt.context))
        table, cell = read_tables(question, texts + [p.text for p in more], shape, settings)
        used = sorted({i for i in ((table.cited or [table.n]) if table else [cell.n] if cell else []) if i > n})
        renumber = {old: n + 1 + j for j, old in enumerate(used)}
        if table is not None:
            table.n = renumber.get(table.n, table.n)
            table.cited = [renumber.get(i, i) for i in (table.cited or [])] or None
        if cell is not None:
            cell.n = renumber.get(cell.n, cell.n)
        added = [more[i - n - 1] for i in used]
        if added:
            context = list(prompt.context) + added
            texts, namings, scopes, doc_ids = _views(context, settings)
            doc_scopes = _document_scopes(context, scopes, retrieved, settings)
            named = _named(question, context, settings, documents)
    ranked = selector.rank(question, prompt.context) if shape == "extract" and selector is not None and cell is None \
        else None
    ending = term_end(ranked, prompt.context) if ranked and settings.term_end and re.search(
        settings.term_end, question, re.IGNORECASE) else None
    ranked = _reordered(ranked, question, namings, settings)
    selection = _selected(ranked, scopes, cover, settings) if ranked is not None and ending is None else None
    if selection is not None:
        selection = selector.marked(question, selection, prompt.context)
    if table is not None:
        # The question's form fixes the arithmetic and a cited row holds the cells: no generation needed.
        shaped = calculate_from_table(table, texts, question)
        first.append(time.perf_counter())
    elif cell is not None:
        # The question asks for one line item's figure in one year and a cited table holds it: read, not generated.
        shaped = value_from_table(cell, texts, question)
        first.append(time.perf_counter())
    elif ending is not None:
        # The term runs for a duration from a start date the document states: slmrag counts, both are cited.
        shaped = date_from_term(ending)
        first.append(time.perf_counter())
    elif selection is not None:
        # The trained selector found the sentence that answers: quoted word for word, nothing generated.
        shaped = quote_selection(selection)
        first.append(time.perf_counter())
    elif shape == "label" and reader is not None:
        # The trained reader reads each kept passage; the one that states a verdict decides (no generation).
        shaped = _read_label(reader, question, prompt.context, doc_scopes, doc_ids, settings, cover, label_selector)
        if shaped.refused and settings.no_verdict_coverage is not None:
            quoted = _without_verdict(question, prompt.context, texts, namings, doc_scopes, doc_ids, settings, cover, selector)
            if quoted is not None:
                quoted.label_scores, shaped = shaped.label_scores, quoted
        first.append(time.perf_counter())
    elif shape == "label" and generator.scores_choices:
        probs = biased(label_probabilities(generator, prompt, list(settings.labels), with_not_found=label_not_found,
                                           prior=label_prior), settings.label_bias)
        first.append(time.perf_counter())  # the label is the first thing the answer says
        best = max(probs, key=probs.get)
        if best == NOT_FOUND_CHOICE:
            shaped = Shaped("label", "", refused=True, label_scores=probs)
        else:
            support = run(max_tokens=min(prompt.max_tokens, SHAPE_TOKENS["label"]), prefix=f"{best.capitalize()}.")
            shaped = finish_label(best, {k: v for k, v in probs.items() if k != NOT_FOUND_CHOICE}, support, n)
    else:
        raw = run(max_tokens=min(prompt.max_tokens, SHAPE_TOKENS.get(shape, prompt.max_tokens)))
        if shape == "extract":
            shaped = finish_extract(raw, texts, question)
        elif shape == "calculate":
            shaped = finish_calculate(raw, texts, question)
        else:
            shaped = finish_free(raw, n, settings.max_sentences)
            if shaped.refused:
                shaped = quote_for_model(shape, texts, question)
            elif shape == "label":  # a backend without logit scoring: read the label from the text
                shaped.shape, shaped.label = "label", read_label(raw, list(settings.labels))
    end = time.perf_counter()
    timings["first_token_s"] = (first[0] if first else end) - t0
    timings["generate_s"] = end - t0
    if shaped.refused:
        return Composed(shaped, None, False, "model", timings)
    checked = _check(shaped, texts, scopes, doc_scopes, doc_ids, question, settings, cover, timings)
    checked.added = added
    if named is not None and checked.grounded and checked.shaped.cited and not named[checked.shaped.cited[0] - 1]:
        return Composed(checked.shaped, checked.support, False, "document", timings, added, named)
    return checked


def _views(context: list, settings: AnswerSettings) -> tuple[list[str], list[str], list[str], list[str]]:
    """What the readers and checks see of the answer's passages: their texts, how each names its document
    (file name, heading and opening), the two together (scopes), and their documents' ids."""
    texts = [p.text for p in context]
    namings = [passage_naming(p, settings.grounding.opening_words) for p in context]
    return texts, namings, [f"{name} {text}" for name, text in zip(namings, texts)], [p.doc_id for p in context]


def _named(question: str, passages: list, settings: AnswerSettings,
           documents: dict[str, str] | None = None) -> list[bool] | None:
    """:func:`app.answers.grounding.passages_named` when the pack asks for it (``grounding.name_the_document``)."""
    return passages_named(question, passages, documents) if settings.grounding.name_the_document else None


def _read_label(reader, question: str, passages: list, doc_scopes: dict[str, str], doc_ids: list[str],
                settings: AnswerSettings, cover, support=None) -> Shaped:
    """The label reader's answer: its verdict from a passage of a document the question names, supported by
    that passage's sentence that states it - or, with a ``support`` selector (``answers.label_selector``), by
    the sentence that selector ranks first among the passages the reader could decide from. Below
    ``min_verdict`` no such passage states a verdict, and the answer is not found."""
    eligible = _documents_covering(doc_scopes, doc_ids, cover, settings)
    reading = reader.read(question, passages, eligible)
    chosen = None
    if support is not None:
        allowed = eligible if eligible is not None and any(eligible) else [True] * len(passages)
        chosen = next((s for s in support.rank(question, passages) if allowed[s.n - 1]), None)
        if chosen is not None:
            # The reader tells whether a clause of this kind is there (its verdict, across the passages); which
            # sentence states it is a ranking the selector learnt from the gold clauses (dev CUAD: the
            # reader's own sentence overlapped the gold clause for 15 of 54, the selector's for 23).
            reading.n, reading.sentence = chosen.n, chosen.sentence
    shaped = label_from_reading(reading, [p.text for p in passages], question)
    if chosen is not None:
        shaped.quote["by"] = "selector"  # ask --json says which model chose the support, as for extract quotes
    if reading.verdict < settings.min_verdict:
        shaped.refused, shaped.label = True, None
    return shaped


def _reordered(ranked: list | None, question: str, namings: list[str], settings: AnswerSettings) -> list | None:
    """The selector's ranking with the question's words as a second opinion, as the pack sets it
    (``selector_question_weight``, ``selector_confident``)."""
    if ranked and settings.selector_question_weight:
        ranked = with_question_words(ranked, question, namings, settings.selector_question_weight)
    if ranked and ranked[0].score < settings.selector_confident:
        ranked = by_question_words(ranked, question, namings)
    return ranked


def _without_verdict(question: str, passages: list, texts: list[str], namings: list[str], doc_scopes: dict[str, str],
                     doc_ids: list[str], settings: AnswerSettings, cover, selector=None) -> Shaped | None:
    """No kept passage states a yes/no verdict (the reader's ``min_verdict``), but the question may still be
    answered in the documents' own words: a protocol says "Norepinephrine is the first-choice vasopressor",
    not "yes". The sentence that bears on the question most - the extract selector's best, re-ordered as an
    extract answer's (:func:`_reordered`), else the one sharing most of its words - of a passage whose document
    holds ``no_verdict_coverage`` of the question's content words is quoted, with no label. None when no
    document covers that much (then "not found")."""
    covering = _covering(doc_scopes, doc_ids, cover, settings.no_verdict_coverage)
    if not any(covering):
        return None
    n, sentence, by = None, "", {}
    if selector is not None:
        ranked = _reordered(selector.rank(question, passages), question, namings, settings)
        best = next((s for s in ranked if covering[s.n - 1]), None)
        if best is not None:
            n, sentence, by = best.n, best.sentence, {"by": "selector"}
    if n is None:
        n = next(i for i, c in enumerate(covering, 1) if c)
        sentence = best_sentence(texts[n - 1], question)
    return Shaped("label", f"The documents do not state a verdict on this; they say: \u201c{sentence}\u201d [{n}]", [n],
                  claim=sentence, label_by="reader",
                  quote={"text": sentence, "n": n, "verbatim": True, "by_model": False, "no_verdict": True, **by})


def _document_scopes(kept: list, scopes: list[str], retrieved: list | None, settings: AnswerSettings) -> dict[str, str]:
    """What each kept passage's document says of the question's subject: the scopes (:func:`_views`; the kept
    passages' are ``scopes``) of all the passages retrieval found of it for this question, the ones the filter
    dropped too (doc id -> text). The filter keeps a passage for holding the answer - a study's conclusion -
    and may drop the aims and methods that name what the study is about; whether the document is about the
    question is read from everything retrieved of it. ``retrieved`` None: the kept passages alone."""
    seen = {id(p) for p in kept}
    docs = {p.doc_id for p in kept}
    dropped = [p for p in (retrieved or []) if p.doc_id in docs and id(p) not in seen]
    _, _, dropped_scopes, _ = _views(dropped, settings)
    out: dict[str, list[str]] = {}
    for p, sc in zip(list(kept) + dropped, list(scopes) + dropped_scopes):
        out.setdefault(p.doc_id, []).append(sc)
    return {d: " ".join(parts) for d, parts in out.items()}


def _documents_covering(doc_scopes: dict[str, str], doc_ids: list[str], cover, settings: AnswerSettings) -> list[bool] | None:
    """Per kept passage: whether its document (:func:`_document_scopes`) covers what the question names (the rule the
    reader's label then faces in :func:`_check_label`). The reader's verdict comes from one of these: a
    decisive conclusion of another study, kept beside the one asked about, must not decide. ``None`` when
    the pack turns the check off."""
    g = settings.grounding
    if g.check == "none":
        return None
    return _covering(doc_scopes, doc_ids, cover, g.label_coverage)


def _covering(doc_scopes: dict[str, str], doc_ids: list[str], cover, floor: float) -> list[bool]:
    """Per kept passage: whether its document (:func:`_document_scopes`) holds ``floor`` of the question by
    ``cover``; each document is looked up once."""
    covered = {d: cover(doc_scopes[d]).score >= floor for d in set(doc_ids)}
    return [covered[d] for d in doc_ids]


def _selected(ranked: list, scopes: list[str], cover, settings: AnswerSettings):
    """The selector's best sentence whose passage covers what the question names (the rule every quote
    faces in :func:`_check`): a sentence that reads like an answer in a passage about something else - a
    contract's preamble naming the parties the question names - gives way to the next best. With no
    covering passage the best sentence stands, and the check then withholds it."""
    g = settings.grounding
    if g.check == "none" or not ranked:
        return ranked[0] if ranked else None
    covered = {n: cover(scopes[n - 1]).score >= g.min_question_coverage
               for n in {s.n for s in ranked}}
    return next((s for s in ranked if covered[s.n]), ranked[0])


def _question_words(ranked: list, question: str, naming: list[str]) -> list[tuple[int, int]]:
    """Per ranked sentence: (how many distinct content words of ``question`` it holds, how many the question
    asks with), not counting the words that name the sentence's document (``naming[n - 1]`` for passage n: its
    name, heading, opening), which a preamble or title line holds without answering anything."""
    asked = set(content_stems(question))
    names = [set(content_stems(t)) for t in naming]
    return [(len((asked - names[s.n - 1]) & set(content_stems(s.sentence))), len(asked - names[s.n - 1]))
            for s in ranked]


def by_question_words(ranked: list, question: str, naming: list[str]) -> list:
    """The selector's sentences re-ordered by how many distinct content words of ``question`` each holds
    (:func:`_question_words`); the selector's order breaks ties (the sort is stable)."""
    held = _question_words(ranked, question, naming)
    return [s for _, s in sorted(zip(held, ranked), key=lambda x: -x[0][0])]


# The question's words re-order only the selector's best few: the weight was chosen there (held-out training rows),
# and further down, sentences the selector rates low would win on shared words alone (a long question's
# "influenza virus" is in many sentences of an influenza paper).
QUESTION_WORDS_TOP = 5


def with_question_words(ranked: list, question: str, naming: list[str], weight: float) -> list:
    """The selector's best :data:`QUESTION_WORDS_TOP` sentences re-ordered by its logit plus ``weight`` times the
    share of the question's content words each holds (:func:`_question_words`); its order breaks ties, and
    the rest of its ranking follows unchanged."""
    top = ranked[:QUESTION_WORDS_TOP]
    held = _question_words(top, question, naming)
    p = [min(max(s.score, 1e-6), 1 - 1e-6) for s in top]
    key = [math.log(x / (1 - x)) + weight * h / max(1, a) for x, (h, a) in zip(p, held)]
    return [top[i] for i in sorted(range(len(top)), key=lambda i: (-key[i], i))] + ranked[QUESTION_WORDS_TOP:]


def _check(shaped: Shaped, texts: list[str], scopes: list[str], doc_scopes: dict[str, str], doc_ids: list[str],
           question: str, settings: AnswerSettings, cover, timings: dict) -> Composed:
    """Every shown answer cites an existing passage and, unless the pack turns the check off, is supported
    by what it cites. ``doc_ids[i]``: the document of passage i; ``doc_scopes``: :func:`_document_scopes`."""
    if shaped.quote is not None and not shaped.quote.get("text", "").strip():
        # The passage has no sentence an answer may quote (all of it planted instructions, which prompts leave
        # out: app.answers.shapes.passage_sentences): an empty quote supports nothing.
        return _evidence_instead(shaped, texts, scopes, question, settings, cover, timings,
                                 Composed(shaped, Support(0.0, 0, []), False, "verbatim", timings))
    if shaped.shape == "label" and shaped.label:
        return _check_label(shaped, texts, scopes, doc_scopes, doc_ids, question, settings, cover, timings)
    g = settings.grounding
    n = len(texts)
    if not shaped.cited:
        # An uncited answer is never shown as a plain answer: cite the passage that supports it best, if any.
        scored = [(lexical_support(shaped.claim or shaped.text, [t], question).score, i + 1) for i, t in enumerate(texts)]
        score, best = max(scored) if scored else (0.0, 0)
        if best and (g.check == "none" or score >= g.min_support):
            shaped.cited = [best]
            shaped.text = f"{shaped.text} [{best}]".strip()
    if not shaped.cited:
        return _evidence_instead(shaped, texts, scopes, question, settings, cover, timings,
                                 Composed(shaped, Support(0.0, 0, []), False, "citation", timings))
    if shaped.quote is not None and shaped.quote.get("verbatim"):
        if g.check != "none":
            # A quote is the passage's own words, but it answers the question only if its passage is about
            # what the question names: a verbatim sentence from another company's filing or another
            # contract is still the wrong answer.
            covered = cover(scopes[shaped.quote["n"] - 1])
            if covered.score < g.min_question_coverage:
                failed = Composed(shaped, covered, False, "lexical", timings)
                return _evidence_instead(shaped, texts, scopes, question, settings, cover, timings, failed)
        return Composed(shaped, Support(1.0, 1, []), True, "verbatim", timings)
    if g.check == "none":
        return Composed(shaped, None, True, "none", timings)
    cited = [texts[i - 1] for i in shaped.cited if 1 <= i <= n]
    support = lexical_support(shaped.claim or shaped.text, cited, question)
    # An answer with no content word or figure to look up ("It is. [1]") states nothing a passage supports.
    if support.checked and support.score >= g.min_support:
        return Composed(shaped, support, True, "lexical", timings)
    return _evidence_instead(shaped, texts, scopes, question, settings, cover, timings,
                             Composed(shaped, support, False, "lexical", timings))


def _evidence_instead(shaped: Shaped, texts: list[str], scopes: list[str], question: str,
                      settings: AnswerSettings, cover, timings: dict, failed: Composed) -> Composed:
    """The model's answer did not hold up. Rather than show it, quote the best passage's best sentence -
    when that passage covers what the question names; otherwise the failed check stands (withheld)."""
    if shaped.quote is not None and not shaped.quote.get("by_model", True):
        return failed  # already slmrag's own quote
    # the kept passage that covers what the question names best (ties: the better filter score, first)
    score, n = max((cover(sc).score, -i) for i, sc in enumerate(scopes))
    if score < settings.grounding.min_question_coverage:
        return failed
    quoted = quote_for_model(shaped.shape, texts, question, -n + 1)
    quoted.calculation, quoted.label = None, shaped.label
    return Composed(quoted, Support(1.0, 1, []), True, "verbatim", timings)


def _check_label(shaped: Shaped, texts: list[str], scopes: list[str], doc_scopes: dict[str, str], doc_ids: list[str],
                 question: str, settings: AnswerSettings, cover, timings: dict) -> Composed:
    """A label asserts something about what the question names: those words must be in the cited passage,
    or the passage is about something else (the question's premise restated as an answer). Its written
    support must hold up too; when it does not (or the model wrote none), the cited passage's own best
    sentence is quoted instead - verbatim, hence supported."""
    g = settings.grounding
    if not shaped.cited:  # cite the passage that covers the question best
        shaped.cited = [max(range(1, len(texts) + 1),
                            key=lambda i: cover(scopes[i - 1]).score)]
    n = shaped.cited[0]
    cited = texts[n - 1]
    if f"[{n}]" not in shaped.text:  # a shown answer always carries its citation
        shaped.text = f"{shaped.text.rstrip()} [{n}]"
    if g.check != "none":
        # The reader picks its passage for the verdict it states (a study's conclusion), not for naming the
        # question's subject, which its document names in its other passages (the study's aims).
        scope = doc_scopes[doc_ids[n - 1]] if shaped.label_by == "reader" else scopes[n - 1]
        covered = cover(scope)
        if covered.score < g.label_coverage:
            return Composed(shaped, covered, False, "lexical", timings)
    support = lexical_support(shaped.claim, [cited], question) if shaped.claim else None
    if support is not None and support.checked and (g.check == "none" or support.score >= g.min_support):
        return Composed(shaped, support, True, "lexical" if g.check != "none" else "none", timings)
    quote = best_sentence(cited, f"{question} {shaped.claim}")
    if not quote:  # nothing of the cited passage may be quoted (see _check)
        return Composed(shaped, Support(0.0, 0, []), False, "verbatim", timings)
    shaped.text = f"{shaped.label.capitalize()}. \u201c{quote}\u201d [{n}]"
    shaped.claim = quote
    shaped.quote = {"text": quote, "n": n, "verbatim": True}
    return Composed(shaped, Support(1.0, 1, []), True, "verbatim", timings)
