"""Task-shaped answers, the grounding check and the task metrics: pure logic, checked by hand."""

from __future__ import annotations

import math

import pytest

from app.answers.arithmetic import FormulaError, evaluate, find_formula, format_value
from app.answers.compose import biased, calibrated, compose
from app.answers.grounding import lexical_support
from app.answers.shapes import (NOT_FOUND, finish_calculate, finish_extract, finish_free, finish_label, locate,
                                read_label, route, tidy)
from app.evaluation.tasks import cuad_value_match, hygiene, jaccard, numeric_f1, summarize, task_score
from app.prompting import Prompt
from app.retrieval import Passage
from app.settings import AnswerSettings, RouteRule

# ---------------------------------------------------------------------------------------------- arithmetic


def test_formula_is_evaluated_exactly():
    c = evaluate("(36,274 / 77,147) * 100")
    assert round(c.value, 2) == 47.02 and c.numbers == (36274.0, 77147.0, 100.0)
    assert evaluate("1,496.5 - 1,202.9").value == pytest.approx(293.6)
    assert evaluate("12 x 3").value == 36 and evaluate("12 x 3").formula == "12 * 3"
    assert evaluate("-(4 - 6) / 4").value == 0.5
    assert evaluate("50% * 300").value == 150


@pytest.mark.parametrize("bad", ['__import__("os").system("x")', "2 ** 10", "a + 1", "5 / 0", "1 +", "", "9" * 400])
def test_anything_but_arithmetic_is_refused(bad):
    with pytest.raises(FormulaError):
        evaluate(bad)


def test_formula_is_found_in_model_text():
    assert find_formula("The change is 1,496.5 - 1,202.9 [1], an increase.") == "1,496.5 - 1,202.9"
    assert find_formula("(7838-442)/4756 [2]") == "(7838-442)/4756"
    assert find_formula("Revenue was $1,496.5 million in 2019 [1].") is None  # no operator, no formula
    assert format_value(293.6) == "293.60" and format_value(47.0) == "47" and format_value(1234.5) == "1,234.50"
    assert format_value(47.019, percent=True) == "47.02%"


# ---------------------------------------------------------------------------------------------- shapes
RULES = [RouteRule(shape="label", pattern=r"^(is|does)\b"), RouteRule(shape="extract", pattern=r"^(what|when)\b")]


def test_route_takes_the_first_matching_rule_of_a_shape_the_pack_uses():
    assert route("Is aspirin indicated?", RULES, ["label", "extract", "free"], "free") == "label"
    assert route("When does it start?", RULES, ["label", "extract", "free"], "free") == "extract"
    assert route("Explain the protocol.", RULES, ["label", "extract", "free"], "free") == "free"
    assert route("Is aspirin indicated?", RULES, ["extract", "free"], "free") == "free"  # label not used


def test_tidy_keeps_few_sentences_no_repeats_and_real_citations():
    raw = "INR is 2.5 [1]. INR is 2.5 [1]. Check weekly [2]. Check weekly [2]. More [9]. Extra"
    assert tidy(raw, n_passages=2, max_sentences=3) == "INR is 2.5 [1]. Check weekly [2]. More ."
    assert tidy("One. Two. Three and a cut-off", 1, 3) == "One. Two."


def test_extract_quotes_verbatim_or_falls_back_to_the_best_sentence():
    passages = ["Warfarin is given daily. The target INR is 2.5 to 3.5 for mechanical valves.", "Other text."]
    s = finish_extract('"the target inr is 2.5 to 3.5" [1]', passages, "What is the target INR?")
    assert s.quote == {"text": "The target INR is 2.5 to 3.5", "n": 1, "verbatim": True, "by_model": True}
    assert s.text == "\u201cThe target INR is 2.5 to 3.5\u201d [1]" and s.cited == [1]
    s = finish_extract('"an INR of three" [1]', passages, "What is the target INR?")
    assert not s.quote["by_model"] and s.quote["text"] == "The target INR is 2.5 to 3.5 for mechanical valves."
    # a "not found" over passages the filter kept: the best passage's best sentence, checked later
    s = finish_extract("I could not find this in your documents.", passages, "What INR for valves?")
    assert not s.refused and s.quote["text"].startswith("The target INR") and not s.quote["by_model"]


def test_calculate_evaluates_and_keeps_citations():
    passages = ["(in millions) | Total sales | $1,496.5 | $1,202.9 |"]
    s = finish_calculate("1,496.5 - 1,202.9 [1]", passages, "What was the change in total sales?")
    assert s.calculation["value"] == pytest.approx(293.6) and s.calculation["scale"] == "millions"
    assert s.text == "293.60 millions = 1,496.5 - 1,202.9 [1]" and s.cited == [1]
    pct = finish_calculate("(1,496.5 - 1,202.9) / 1,202.9 * 100 [1]", passages, "What was the percentage change?")
    assert pct.calculation["display"] == "24.41%"
    plain = finish_calculate("$1,496.5 million [1]", passages, "What was the change?")
    assert plain.calculation is None and plain.text == "$1,496.5 million [1]"


def test_label_answer_leads_with_the_label():
    s = finish_label("no", {"yes": 0.2, "no": 0.8}, " No, the trial found no effect [2]. Also [2].", 2)
    assert s.text == "No. the trial found no effect [2]." and s.label == "no" and s.cited == [2]
    free = finish_free("Yes it does [1]. Yes it does [1].", 1, 3)
    assert free.text == "Yes it does [1]." and not free.refused
    assert finish_free(NOT_FOUND, 1, 3).refused
    # a citation and nothing else says nothing: no answer (seen on finance dev: "[5]" shown as grounded)
    assert finish_free("[2].", 2, 3).refused and not finish_free("2018 [2].", 2, 3).refused
    # without logit scoring the label is read from the text: whole words of the pack's labels only
    assert read_label("**Maybe**: the trial was small", ["yes", "no", "maybe"]) == "maybe"
    assert read_label("Nothing known; yesterday's data", ["yes", "no"]) is None


def test_locate_ignores_case_spacing_and_punctuation():
    assert locate("section 4.2 , the term", ["See Section 4.2, the Term of this..."]) == (0, "Section 4.2, the Term")
    assert locate("absent words", ["nothing here"]) is None


# ---------------------------------------------------------------------------------------------- grounding
P = ("Stage 1 hypertension is a systolic pressure of 130-139 mmHg or diastolic 80-89 mmHg. "
     "The protocol recommends lifestyle changes for all patients.")


def test_an_answer_restating_the_questions_premise_is_not_supported():
    q = "Does the protocol recommend aspirin for all patients with atrial fibrillation?"
    s = lexical_support("The protocol recommends taking aspirin for all patients with atrial fibrillation.", [P], q)
    assert s.score < 0.6 and {"aspirin", "atrial", "fibrillation"} <= set(s.missing)
    ok = lexical_support("Stage 1 hypertension is a systolic pressure of 130-139 mmHg [1].", [P], "What is stage 1?")
    assert ok.score == 1.0
    wrong_number = lexical_support("It is 150 mmHg [1].", [P], "What defines stage 1 hypertension?")
    assert wrong_number.missing == ["150"] and wrong_number.score < 0.5


class FakeGenerator:
    """Unit-test stand-in for a backend: fixed label probabilities and a fixed generated text."""

    scores_choices = True

    def __init__(self, text: str, probs: dict | None = None):
        self.text, self.probs, self.calls = text, probs or {}, []

    def chat_prompt(self, messages):
        return "PROMPT"

    def next_token_choice(self, prompt, choices):
        return {k: self.probs.get(k, 0.0) for k in choices}

    def stream(self, messages, *, max_tokens=None, prefix="", stop=None):
        self.calls.append(prefix)
        yield self.text


def _prompt(shape: str, texts: list[str]) -> Prompt:
    ps = [Passage(vid=i, doc_id="d", source="/d.txt", name="d.txt", page=None, text=t, heading="", start=0, end=len(t))
          for i, t in enumerate(texts)]
    return Prompt([{"role": "user", "content": "x"}], ps, 64, shape)


def test_compose_label_from_logits_then_support_after_the_label():
    settings = AnswerSettings(shapes=["label", "free"], labels=["yes", "no"], default="free")
    gen = FakeGenerator(" Lifestyle changes are recommended for all patients [1].", {"yes": 0.7, "no": 0.3})
    c = compose(gen, _prompt("label", [P]), "Does the protocol recommend lifestyle changes for patients?", settings)
    assert gen.calls == ["Yes."] and c.shaped.label == "yes" and c.grounded
    assert c.shaped.text == "Yes. Lifestyle changes are recommended for all patients [1]."


def test_compose_label_support_without_a_citation_gets_one():
    settings = AnswerSettings(shapes=["label", "free"], labels=["yes", "no"], default="free")
    gen = FakeGenerator(" Lifestyle changes are recommended for all patients.", {"yes": 0.7, "no": 0.3})
    c = compose(gen, _prompt("label", ["Other text about nothing.", P]),
                "Does the protocol recommend lifestyle changes for patients?", settings)
    assert c.grounded and c.shaped.cited == [2] and c.shaped.text.endswith("[2]")


def test_compose_withholds_a_label_about_what_the_passages_never_mention():
    settings = AnswerSettings(shapes=["label", "free"], labels=["yes", "no"], default="free")
    gen = FakeGenerator(" The protocol recommends aspirin [1].", {"yes": 0.9, "no": 0.1})
    c = compose(gen, _prompt("label", [P]), "Does the protocol recommend aspirin for atrial fibrillation?", settings)
    assert not c.grounded and c.decided_by == "lexical"


def test_a_contract_named_by_its_parties_is_covered_by_its_opening_when_the_pack_says_so():
    """The clause does not repeat the parties; the contract's first words do. With opening_words 0 the
    question's party names count as missing (agreement, party, terminate, cause found; acme, widgets, birch,
    supply not: coverage 4/8 < .6, withheld); with the opening counted all 8 are found, and a question about
    another contract's parties still is not (4/8)."""
    clause = "Either party may terminate this Agreement without cause upon ninety days written notice."
    opening = "DISTRIBUTION AGREEMENT between Acme Widgets Inc. and Birch Supply LLC, dated May 1, 2019."
    ps = [Passage(vid=0, doc_id="d", source="/c.txt", name="c.txt", page=None, text=clause, heading="", start=0,
                  end=len(clause), opening=opening)]
    prompt = Prompt([{"role": "user", "content": "x"}], ps, 64, "label")
    q = "In the agreement between Acme Widgets and Birch Supply, can a party terminate without cause?"
    other = "In the agreement between Crane Foods and Delta Mills, can a party terminate without cause?"
    gen = FakeGenerator(" Either party may terminate this Agreement without cause [1].", {"yes": 0.9, "no": 0.1})
    for words, question, grounded in ((0, q, False), (40, q, True), (40, other, False)):
        settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label",
                                  grounding={"opening_words": words, "min_question_coverage": 0.6})
        c = compose(gen, prompt, question, settings)
        assert c.grounded is grounded, (words, question, c.support)


def test_a_verbatim_quote_from_a_passage_about_something_else_is_not_an_answer():
    """The model quotes passage 1 word for word, but passage 1 is another company's filing: the quote is
    verbatim and still wrong. Passage 2 covers the question, so its best sentence is quoted instead; with
    only passage 1 kept, the answer is withheld."""
    other = "Birch Supply LLC reported net sales of $410 million in fiscal 2019, up 3 percent."
    acme = "Acme Widgets Inc. reported net sales of $260 million in fiscal 2019, down 2 percent."
    settings = AnswerSettings(shapes=["extract"], default="extract")
    q = "What net sales did Acme Widgets Incorporated announce?"  # passage 1 covers 2 of its 6 words, passage 2 4
    gen = FakeGenerator('"net sales of $410 million in fiscal 2019" [1]')
    c = compose(gen, _prompt("extract", [other, acme]), q, settings)
    assert c.grounded and c.shaped.cited == [2] and c.shaped.quote["by_model"] is False and "$260" in c.shaped.text
    c = compose(gen, _prompt("extract", [other]), q, settings)
    assert not c.grounded and c.decided_by == "lexical" and {"Acme", "Widgets"} <= set(c.support.missing)


def test_compose_cites_an_uncited_but_supported_answer_and_refuses_an_unsupported_one():
    settings = AnswerSettings()
    c = compose(FakeGenerator("Stage 1 hypertension is 130-139 mmHg systolic."), _prompt("free", ["Other.", P]),
                "What is stage 1 hypertension?", settings)
    assert c.grounded and c.shaped.cited == [2] and c.shaped.text.endswith("[2]")
    c = compose(FakeGenerator("Aspirin 75 mg for atrial fibrillation."), _prompt("free", [P]), "What dose?", settings)
    assert not c.grounded and c.decided_by == "citation"
    # cited, but nothing in it to look up: not an answer a passage supports
    # (the passage's own sentence is quoted instead, as for any answer that fails the check)
    c = compose(FakeGenerator("It is so [1]."), _prompt("free", [P]), "What is stage 1 hypertension?", settings)
    assert c.decided_by == "verbatim" and "It is so" not in c.shaped.text and "130-139" in c.shaped.text


def test_compose_keeps_slmrags_own_quote_only_when_its_passage_covers_the_question():
    settings = AnswerSettings(shapes=["extract", "free"], default="free")
    nf = "I could not find this in your documents."
    c = compose(FakeGenerator(nf), _prompt("extract", [P]), "What systolic pressure defines stage 1 hypertension?",
                settings)
    assert c.grounded and c.decided_by == "verbatim" and "130-139" in c.shaped.text
    c = compose(FakeGenerator(nf), _prompt("extract", [P]), "What aspirin dose is used in atrial fibrillation?",
                settings)
    assert not c.grounded and c.decided_by == "lexical"


def test_contextual_calibration_divides_by_the_content_free_prior():
    # prior favours "no" 3:1; the question's probabilities 0.4 / 0.6 -> 0.4/0.25 : 0.6/0.75 = 1.6 : 0.8
    out = calibrated({"yes": 0.4, "no": 0.6}, {"yes": 0.25, "no": 0.75})
    assert out == pytest.approx({"yes": 2 / 3, "no": 1 / 3})
    assert calibrated({"yes": 0.4, "no": 0.6}, None) == {"yes": 0.4, "no": 0.6}


def test_fitted_label_bias_shifts_the_choice_by_its_log_offset():
    # P(yes) 0.4, P(no) 0.6; an offset of ln 2 on yes makes it 0.8 : 0.6 -> yes wins (4/7)
    out = biased({"yes": 0.4, "no": 0.6}, {"yes": math.log(2), "no": 0.0})
    assert out == pytest.approx({"yes": 4 / 7, "no": 3 / 7})
    assert biased({"yes": 0.4, "no": 0.6}, {}) == {"yes": 0.4, "no": 0.6}
    settings = AnswerSettings(shapes=["label", "free"], labels=["yes", "no"], default="free",
                              label_bias={"yes": math.log(2)})
    c = compose(FakeGenerator("It is [1].", {"yes": 0.4, "no": 0.6}), _prompt("label", [P]), "Is it?", settings)
    assert c.shaped.label == "yes"
    with pytest.raises(ValueError, match="maybe"):
        AnswerSettings(shapes=["label", "free"], labels=["yes", "no"], default="free", label_bias={"maybe": 1.0})


def test_compose_not_found_choice_wins_means_refused():
    settings = AnswerSettings(shapes=["label", "free"], labels=["yes", "no"], default="free")
    gen = FakeGenerator("unused", {"yes": 0.2, "no": 0.1, "__not_found__": 0.7})
    c = compose(gen, _prompt("label", [P]), "Is it?", settings, label_not_found=True)
    assert c.shaped.refused and c.decided_by == "model" and gen.calls == []


# ---------------------------------------------------------------------------------------------- task metrics
def test_cuad_value_and_clause_rules():
    assert cuad_value_match("made as of the 26th day of August, 2014", "8/26/14")
    assert cuad_value_match("August 26, 2014", "8/26/14") and not cuad_value_match("August 27, 2014", "8/26/14")
    assert cuad_value_match("the laws of the State of New York", "New York")
    assert cuad_value_match("within ninety (90) days", "90 days") and not cuad_value_match("30 days", "90 days")
    # articles are dropped (SQuAD normalisation): {party may not assign} vs {... this} -> 4 / 5
    assert jaccard("the party may not assign", "party may not assign this") == pytest.approx(4 / 5)


def test_task_scores_by_source():
    pqa = {"source": "pubmedqa", "answer": "yes"}
    assert task_score({"label": "yes"}, "Yes. ...", pqa, False)["correct"]
    assert not task_score({"label": "yes"}, "x", pqa, True)["correct"]  # abstained: no label
    # a label answer with no verdict (a quote) states no label, whatever words its quote holds; a free-text
    # answer's label is read from its text
    no_verdict = "The documents do not state a verdict on this; they say: \u201cThere was no difference.\u201d [1]"
    assert task_score({"shape": "label", "label": None}, no_verdict, pqa, False)["pred_label"] is None
    assert task_score({"shape": "free", "label": None}, "Yes, it does [1].", pqa, False)["pred_label"] == "yes"
    tat = {"source": "tat-qa", "answer": "47.02%", "answer_raw": "47.02", "scale": "percent"}
    info = {"details": {"calculation": {"value": 47.0193}}}
    assert task_score(info, "47.02% = ...", tat, False)["em"]
    cqa = {"source": "covid-qa", "answer": "15-45%"}
    s = task_score({"details": {"quote": {"text": "approximately 15-45%"}}}, "x", cqa, False)
    assert s["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert numeric_f1("1,496.50", "1496.5") == 1.0
    fb = {"source": "financebench", "answer": "AMCOR's Adj. EBITDA was $2,018mn in FY 2023"}
    assert not task_score({}, "\u201cGAAP.\u201d [2]", fb, False)["correct"]  # a citation marker is not a number
    assert task_score({}, "Adjusted EBITDA was $2,018 million [2]", fb, False)["correct"]
    runs = [{"task": task_score({"label": lab}, "", {"source": "pubmedqa", "answer": gold}, False),
             "hygiene": {"answered": True, "valid_citation": True, "sentences": 1, "repeated_sentence": False,
                         "verbatim_quote": None}}
            for lab, gold in [("yes", "yes"), ("no", "yes"), ("no", "no"), ("maybe", "no")]]
    block = summarize(runs)
    assert block["pubmedqa"]["accuracy"] == 0.5
    # yes: tp1 fp0 fn1 -> 2/3; no: tp1 fp1 fn1 -> 1/2; maybe: 0 -> macro (2/3 + 1/2 + 0) / 3
    assert block["pubmedqa"]["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 3)
    assert block["hygiene"]["valid_citation"] == 1.0
    assert block["hygiene"]["quoted_for_model"] == 0.0


def test_hygiene_counts_slmrags_own_quotes_apart_from_the_models():
    ours = {"details": {"quote": {"text": "BP 130-139.", "n": 1, "verbatim": True, "by_model": False}}}
    model = {"details": {"quote": {"text": "130-139", "n": 1, "verbatim": True, "by_model": True}}}
    assert hygiene(ours, "“BP 130-139.” [1]", 1, False)["quoted_for_model"] is True
    assert hygiene(model, "“130-139” [1]", 1, False)["quoted_for_model"] is False
    assert hygiene({}, "Yes [1].", 1, False)["quoted_for_model"] is False
    runs = [{"hygiene": hygiene(i, "x [1]", 1, False)} for i in (ours, model, model, {})]
    assert summarize(runs)["hygiene"]["quoted_for_model"] == 0.25


def test_compose_calculates_from_the_table_row_without_generating():
    table = ("| (In thousands) | 2019 | 2018 |\n| --- | --- | --- |\n"
             "| Expected return on plan assets | (34,627) | (38,640) |\n")
    settings = AnswerSettings(shapes=["calculate", "free"], default="free")
    gen = FakeGenerator("34,627 - 38,640 [1]")
    c = compose(gen, _prompt("calculate", [table]), "What was the change in expected return on plan assets "
                "between 2018 and 2019?", settings)
    assert gen.calls == []  # the form fixed the arithmetic: the model was not asked
    assert c.shaped.text == "4,013.00 thousands = (-34,627) - (-38,640) [1]"
    assert c.grounded and c.decided_by == "lexical" and c.shaped.calculation["by"] == "table"
    # no table row the question names: the model's formula stands
    c = compose(gen, _prompt("calculate", [table]), "What was the change in revenue between 2018 and 2019?", settings)
    assert gen.calls == [""] and c.shaped.calculation["by"] == "model"


def test_compose_reads_the_rest_of_a_split_statement_and_cites_the_part_it_used():
    """The kept chunk is the statement's lower half; revenue is in the upper half, which only same_table finds:
    the answer reads it there and cites it as one more passage (and only that one)."""
    title = "STATEMENTS OF OPERATIONS\n(in millions)\nYear Ended December 31,\n2016 2017\n"
    lower = _prompt("calculate", ["An unrelated passage.", title + "Net income 2,371 3,033\n"])
    upper = _prompt("calculate", [title + "Operating expense 5 6\n", title + "Total net sales 135,987 177,866\n"]).context
    settings = AnswerSettings(shapes=["calculate", "free"], default="free", row_names={"revenue": ["net sales"]})
    gen = FakeGenerator("3,033 [2]")
    q = "What was the percentage change in revenue from FY2016 to FY2017?"
    c = compose(gen, lower, q, settings, same_table=lambda passages: upper)
    assert gen.calls == [] and c.shaped.text == "30.80% = ((177,866 - 135,987) / 135,987) * 100 [3]"
    assert c.grounded and c.added == [upper[1]] and c.shaped.cited == [3]
    # without the rest of the table the row is not there: the model answers, nothing is added
    c = compose(gen, lower, q, settings)
    assert gen.calls == [""] and c.added == []


def test_compose_reads_a_line_item_off_the_statement_without_generating():
    statement = ("CONSOLIDATED BALANCE SHEETS\n(in thousands)\nAs of December 31, 2017 2016\n"
                 "Total current liabilities 5,466,312 4,586,657\nTotal liabilities 15,430,786 10,906,810\n")
    settings = AnswerSettings(shapes=["calculate", "free"], default="free", table_lookup=True)
    gen = FakeGenerator("4,586,657 [1]")
    c = compose(gen, _prompt("free", ["An unrelated passage.", statement]),
                "What were total current liabilities at the end of FY2017 (in USD millions)?", settings)
    assert gen.calls == []  # one line item, one year: the cell is read, not generated
    # the figure as the table writes it, its unit, restated in the unit asked for, the row and year, cited
    assert c.shaped.text == "5,466,312 (in thousands) = 5,466.31 million \u2014 Total current liabilities, 2017 [2]"
    assert c.grounded and c.decided_by == "lexical" and c.shaped.cited == [2]
    # the answer says what was read, and the UI says so: row and column, for the analyst to check
    lookup = c.shaped.to_json()["lookup"]
    assert lookup == {"n": 2, "row": "Total current liabilities", "year": "2017", "cell": "5,466,312", "unit": "thousands"}
    from app.ui_support import check_note
    assert check_note({"decided_by": "lexical", "grounded": True, "details": {"lookup": lookup}}).startswith(
        "Read off the table in [2] by slmrag, not generated: the row \u201cTotal current liabilities\u201d, the column for 2017.")
    # off (the default): the generator answers
    c = compose(gen, _prompt("free", [statement]), "What were total current liabilities in 2017?",
                AnswerSettings(shapes=["free"], default="free"))
    assert gen.calls == [""] and c.shaped.text.startswith("4,586,657")


def test_reader_decision_is_the_passage_most_likely_to_state_a_verdict():
    """Passage 1 states nothing (none .7), passage 2 says yes: verdict 1 - .2 = .8, label probabilities
    .6/.1/.1 renormalised to .75/.125/.125."""
    import numpy as np

    from app.answers.reader import decide

    rows = np.array([[0.1, 0.1, 0.1, 0.7], [0.6, 0.1, 0.1, 0.2]])
    r = decide(rows, ["yes", "no", "maybe"])
    assert (r.n, r.label) == (2, "yes")
    assert r.verdict == pytest.approx(0.8) and r.probs == pytest.approx({"yes": 0.75, "no": 0.125, "maybe": 0.125})
    # only passage 1 may decide: its verdict .3 and label (all .1: the first) stand
    r = decide(rows, ["yes", "no", "maybe"], [True, False])
    assert (r.n, r.label) == (1, "yes") and r.verdict == pytest.approx(0.3)
    # no passage may decide: as if all could (the grounding check then withholds)
    assert decide(rows, ["yes", "no", "maybe"], [False, False]).n == 2


class FakeSelector:
    """Unit-test stand-in for the sentence selector: a fixed ranking; ``span`` marks that part of the chosen
    sentence, as a selector trained with a span head does."""

    def __init__(self, ranked, span: str = ""):
        self.ranked, self.span = ranked, span

    def rank(self, question, passages):
        return self.ranked

    def marked(self, question, selection, passages):
        from dataclasses import replace

        return replace(selection, span=self.span, span_score=0.8) if self.span else selection


class FakeReader:
    """Unit-test stand-in for the label reader: a fixed reading."""

    def __init__(self, n: int, label: str):
        self.n, self.label, self.questions, self.eligible = n, label, [], []

    def read(self, question, passages, eligible=None):
        from app.answers.reader import Reading

        self.questions.append(question)
        self.eligible.append(eligible)
        return Reading(self.n, self.label, {"yes": 0.2, "no": 0.8}, 0.9)


class Unsure(FakeReader):
    """A reading whose verdict (.3) is under the default floor (min_verdict .5): no passage states one."""

    def read(self, question, passages, eligible=None):
        r = super().read(question, passages, eligible)
        r.verdict = 0.3
        return r


def _doc_prompt(shape: str, docs_texts: list[tuple[str, str]]) -> Prompt:
    ps = [Passage(vid=i, doc_id=d, source=f"/{d}.txt", name=f"{d}.txt", page=None, text=t, heading="", start=0,
                  end=len(t)) for i, (d, t) in enumerate(docs_texts)]
    return Prompt([{"role": "user", "content": "x"}], ps, 64, shape)


def test_reader_label_quotes_the_deciding_passage_without_generating():
    """The study's aims (passage 1) name what the question asks; its conclusion (passage 2, same document)
    states the verdict without repeating them: the answer is the reader's label with the conclusion's own
    sentence, and the generator is never asked. The same conclusion from another document than the one
    naming the question's subject is withheld: the verdict is not about what the question names."""
    aims = "This trial tested whether statins lower stroke risk in elderly patients with diabetes."
    verdict = "The treatment did not reduce events compared with placebo. Adverse effects were rare."
    settings = AnswerSettings(shapes=["label", "free"], labels=["yes", "no"], default="free")
    q = "Do statins lower stroke risk in elderly diabetic patients?"
    gen = FakeGenerator("should not be used")
    c = compose(gen, _doc_prompt("label", [("a", aims), ("a", verdict)]), q, settings, reader=FakeReader(2, "no"))
    assert gen.calls == [] and c.grounded and c.shaped.label_by == "reader"
    assert c.shaped.text == "No. \u201cThe treatment did not reduce events compared with placebo.\u201d [2]"
    assert c.shaped.label_scores == {"yes": 0.2, "no": 0.8, "verdict": 0.9}
    c = compose(gen, _doc_prompt("label", [("a", aims), ("b", verdict)]), q, settings, reader=FakeReader(2, "no"))
    assert not c.grounded and c.decided_by == "lexical"


def test_a_document_is_about_the_question_by_all_that_was_retrieved_of_it():
    """The filter kept only the study's conclusion (it holds the verdict) and dropped its aims, which name
    what the question asks. Whether the study is about the question is read from every passage retrieval
    found of it, so the verdict stands; another document's retrieved aims do not count for it, and with
    nothing retrieved beyond the kept passage the conclusion alone does not cover the question."""
    aims = "This trial tested whether statins lower stroke risk in elderly patients with diabetes."
    verdict = "The treatment did not reduce events compared with placebo. Adverse effects were rare."
    settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label")
    q = "Do statins lower stroke risk in elderly diabetic patients?"
    retrieved = _doc_prompt("label", [("a", verdict), ("a", aims)]).context
    kept = Prompt([{"role": "user", "content": "x"}], retrieved[:1], 64, "label")
    reader = FakeReader(1, "no")
    c = compose(FakeGenerator("unused"), kept, q, settings, reader=reader, retrieved=retrieved)
    assert reader.eligible == [[True]] and c.grounded and c.shaped.cited == [1]
    assert c.shaped.text == "No. \u201cThe treatment did not reduce events compared with placebo.\u201d [1]"
    other = _doc_prompt("label", [("a", verdict), ("b", aims)]).context
    reader = FakeReader(1, "no")
    c = compose(FakeGenerator("unused"), kept, q, settings, reader=reader, retrieved=other)
    assert reader.eligible == [[False]] and not c.grounded
    c = compose(FakeGenerator("unused"), kept, q, settings, reader=FakeReader(1, "no"))
    assert not c.grounded and c.decided_by == "lexical"


def test_only_a_document_that_covers_the_question_may_decide_the_label():
    """Kept: the asked-about study's aims and conclusion (document a) and another study's conclusion
    (document b, which never names statins or stroke). Only a's passages are eligible to decide, so a more
    decisive conclusion from b cannot answer for a; with the check off, every passage is."""
    aims = "This trial tested whether statins lower stroke risk in elderly patients with diabetes."
    verdict_a = "The treatment did not reduce events compared with placebo."
    verdict_b = "Exercise clearly improved sleep quality in adolescents."
    q = "Do statins lower stroke risk in elderly diabetic patients?"
    prompt = _doc_prompt("label", [("a", aims), ("b", verdict_b), ("a", verdict_a)])
    reader = FakeReader(3, "no")
    c = compose(FakeGenerator("unused"), prompt, q, AnswerSettings(shapes=["label"], labels=["yes", "no"],
                                                                   default="label"), reader=reader)
    assert reader.eligible == [[True, False, True]] and c.grounded
    reader = FakeReader(3, "no")
    compose(FakeGenerator("unused"), prompt, q, AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label",
                                                               grounding={"check": "none"}), reader=reader)
    assert reader.eligible == [None]


def test_a_label_needs_more_of_the_question_covered_when_the_pack_raises_its_floor():
    """"Is aripiprazole a new risk factor for pathological gambling?" has 6 content words (aripipr, new, risk,
    factor, patholo, gambl); another study's "a new risk factor" holds 3 of them: 3/6 = .5, which stands at the
    default floor (min_question_coverage .5) and not at min_label_coverage .51 (more than half): the reader
    may not decide from that study, and its label is withheld. The floor is the label's own: an extract
    answer's coverage floor stays min_question_coverage."""
    other = "Marital status was a new risk factor for urinary infection in women."
    q = "Is aripiprazole a new risk factor for pathological gambling?"
    for floor, eligible, grounded in ((None, True, True), (0.51, False, False)):
        settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label",
                                  grounding={"min_label_coverage": floor})
        reader = FakeReader(1, "yes")
        c = compose(FakeGenerator("unused"), _doc_prompt("label", [("b", other)]), q, settings, reader=reader)
        assert reader.eligible == [[eligible]] and c.grounded is grounded, (floor, c.support)
        assert settings.grounding.min_question_coverage == 0.5
        assert settings.grounding.label_coverage == (0.5 if floor is None else floor)
    assert not c.grounded and c.decided_by == "lexical" and c.support.score == 0.5


def test_a_label_selector_chooses_the_sentence_a_readers_label_quotes():
    """The reader decides (passage 1, "yes"); the label selector ranks a sentence of document b first, but b
    does not cover what the question names, so its best sentence of document a - in passage 3 - is quoted
    and cited, the reader's label and scores unchanged."""
    from app.answers.selector import Selection

    q = "Does the distribution agreement require the distributor to keep product liability insurance?"
    a1 = "This distribution agreement is made between Tidewater and the distributor."
    b = "The supplier shall keep general liability insurance of one million dollars."
    a3 = "The distributor shall maintain product liability insurance naming the supplier as insured."
    prompt = _doc_prompt("label", [("a", a1), ("b", b), ("a", a3)])
    ranked = [Selection(2, b, 0.9), Selection(3, a3, 0.8), Selection(1, a1, 0.1)]
    settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label")
    c = compose(FakeGenerator("unused"), prompt, q, settings, reader=FakeReader(1, "yes"),
                label_selector=FakeSelector(ranked))
    assert c.shaped.text == f"Yes. \u201c{a3}\u201d [3]" and c.shaped.cited == [3] and c.grounded
    assert c.shaped.quote["by"] == "selector"
    assert c.shaped.label_scores == {"yes": 0.2, "no": 0.8, "verdict": 0.9}
    c = compose(FakeGenerator("unused"), prompt, q, settings, reader=FakeReader(1, "yes"))  # no selector: the reader's
    assert c.shaped.text == f"Yes. \u201c{a1}\u201d [1]" and "by" not in c.shaped.quote


def test_reader_quotes_the_sentence_of_the_deciding_passage_that_states_the_label():
    """Passage 2 states a verdict (none low); of its two sentences the second gives "no" the higher
    probability, so that one is quoted."""
    import numpy as np

    from app.answers.reader import LabelReader

    class Model:  # logits for yes, no, none by what the text says
        def logits(self, question, texts):
            table = {"aims": [0, 0, 3], "did not": [0, 4, 0], "objective": [1, 0, 0]}
            return np.array([next((v for k, v in table.items() if k in t.lower()), [0, 0, 0]) for t in texts], float)

    reader = LabelReader("/nowhere", ["yes", "no"])
    reader._model = Model()
    ps = _doc_prompt("label", [("a", "The aims of the study."), ("a", "Objective was clear. Zinc did not help.")]).context
    r = reader.read("Does zinc help?", ps)
    assert (r.n, r.label, r.sentence) == (2, "no", "Zinc did not help.")


def test_passage_sentences_keep_a_pdf_wrapped_sentence_whole():
    """A clause wrapped over two lines is one sentence (verbatim, line break kept); list items, table rows
    and blank lines still end one."""
    from app.answers.shapes import passage_sentences

    text = ("Either party may terminate this Agreement by written notice\nto the other party. The Company shall:\n"
            "(a) pay the fee; and\n(b) keep records.\n\n| Revenue | 5 |\n| Cost | 3 |")
    assert passage_sentences(text) == [
        "Either party may terminate this Agreement by written notice\nto the other party.", "The Company shall:",
        "(a) pay the fee; and", "(b) keep records.", "| Revenue | 5 |", "| Cost | 3 |"]
    assert all(s in text for s in passage_sentences(text))


def test_a_marked_span_is_the_extract_answer_with_its_sentence_as_support():
    """The selector marked "10 mg" in its sentence: the answer is that part, then the sentence, both verbatim
    and cited; the quote the metrics read is the part. A mark that is not text of the sentence is ignored."""
    from app.answers.selector import Selection

    sentence = "Children took 10 mg of zinc twice a day."
    prompt = _doc_prompt("extract", [("a", "Zinc lozenges for colds in children."), ("a", sentence + " Colds lasted.")])
    settings = AnswerSettings(shapes=["extract"], default="extract")
    q = "What dose of zinc did children take?"
    c = compose(FakeGenerator("unused"), prompt, q, settings, selector=FakeSelector([Selection(2, sentence, 0.9)], "10 mg"))
    assert c.grounded and c.shaped.text == "10 mg \u2014 \u201cChildren took 10 mg of zinc twice a day.\u201d [2]"
    assert c.shaped.quote["text"] == "10 mg" and c.shaped.quote["sentence"] == sentence and c.shaped.quote["span_score"] == 0.8
    c = compose(FakeGenerator("unused"), prompt, q, settings, selector=FakeSelector([Selection(2, sentence, 0.9)], "20 mg"))
    assert c.shaped.quote["text"] == sentence and "sentence" not in c.shaped.quote
    # a mark that runs over a sentence's end (in a "sentence" the splitter left whole) would be read twice: the
    # quote alone is the answer
    two = "Dose was 10 mg. b) Children took it twice a day."
    prompt = _doc_prompt("extract", [("a", two)])
    c = compose(FakeGenerator("unused"), prompt, q, settings, selector=FakeSelector([Selection(1, two, 0.9)], "10 mg. b) Children"))
    assert c.shaped.text == f"\u201c{two}\u201d [1]" and c.shaped.quote["text"] == two


def test_best_span_is_the_highest_start_plus_end_within_the_allowed_tokens():
    """Token 0 is not allowed (the question's). Allowed pairs i <= j: (1,1) 1+4 = 5, (2,3) 3+2.5 = 5.5 is
    the best; (2,1) would be 7 but ends before it starts. Its probability: softmax of the allowed starts
    [1, 3, 0, 0] at token 2 times that of the allowed ends [4, 0, 2.5, 0] at token 3. With spans of one
    token at most, (1,1) wins."""
    import numpy as np

    from app.pair_model import best_span

    start, end = [9.0, 1.0, 3.0, 0.0, 0.0], [0.0, 4.0, 0.0, 2.5, 0.0]
    allowed = [False, True, True, True, True]
    i, j, p = best_span(start, end, allowed)
    ps = np.exp([1.0, 3.0, 0.0, 0.0]) / np.exp([1.0, 3.0, 0.0, 0.0]).sum()
    pe = np.exp([4.0, 0.0, 2.5, 0.0]) / np.exp([4.0, 0.0, 2.5, 0.0]).sum()
    assert (i, j) == (2, 3) and p == pytest.approx(ps[1] * pe[2])
    assert best_span(start, end, allowed, max_tokens=1)[:2] == (1, 1)
    assert best_span(start, end, [False] * 5) == (0, 0, 0.0)


def test_answer_offsets_find_the_answer_whatever_its_case_spacing_or_punctuation():
    from app.training.selector import answer_offsets

    text = "Zinc | Colds\nChildren took 10 mg of Zinc twice\na day."
    s, e = answer_offsets(text, "10 mg of zinc twice a day")
    assert text[s:e] == "10 mg of Zinc twice\na day"
    assert answer_offsets(text, "zinc", start=13) == (text.index("Zinc", 13), text.index("Zinc", 13) + 4)
    assert answer_offsets(text, "in") is None  # a whole word, not part of "Zinc"
    assert answer_offsets(text, "...") is None


def test_a_selector_positive_lies_in_the_evidence_not_only_holds_the_answer():
    from app.training.selector import answer_is_text, holds_answer

    doc = ("This Agreement is made between Keystone Foods Inc., a Pennsylvania corporation, and Lark LLC. "
           "This Agreement shall be governed by the laws of the Commonwealth of Pennsylvania.")
    preamble, clause = doc.split(". ", 1)
    row = {"answer": "Pennsylvania", "evidence": clause}
    assert answer_is_text(row, doc)
    assert holds_answer(clause, row, True)
    assert not holds_answer(preamble, row, True)  # names the state, but is not the governing-law clause
    # an answer in another form than the evidence rests on the evidence alone
    dated = {"answer": "4/7/20", "evidence": "made on the 7th day of April, 2020"}
    assert not answer_is_text(dated, "This deed was made on the 7th day of April, 2020 by the parties.")
    assert holds_answer("This deed was made on the 7th day of April, 2020 by the parties.", dated, False)
    # an evidence with no content word (the answer itself) places nothing: holding the answer decides
    bare = {"answer": "9/9/97", "evidence": "9/9/97"}
    assert holds_answer("Signed 9/9/97 by the Licensor.", bare, answer_is_text(bare, ""))
    # the older rule (--positives answer): any sentence holding a text answer of the document
    assert answer_is_text({"answer": "Pennsylvania", "evidence": "governed by Delaware law"}, doc, "answer")
    assert holds_answer(preamble, row, True, "answer")


def test_ui_note_says_the_reader_chose_the_label():
    from app.ui_support import check_note

    rec = {"grounded": True, "decided_by": "lexical", "support": {"score": 1.0},
           "details": {"label_by": "reader", "label_scores": {"yes": 0.9, "no": 0.1, "verdict": 0.93}}}
    assert "trained label reader (verdict 0.93)" in check_note(rec)
    assert check_note(rec).endswith("; the sentence that states it is quoted word for word.")
    rec["details"]["quote"] = {"by": "selector"}
    assert check_note(rec).endswith("the sentence that states it, chosen by its trained sentence selector, is quoted "
                                    "word for word.")
    assert check_note({**rec, "details": {}}) == "Checked against the cited passages (support 1.00)."
    none = {"grounded": False, "decided_by": "model", "details": {"label_by": "reader", "label_scores": {"verdict": 0.01}}}
    assert check_note(none).endswith("found no verdict on the question in the passages of the documents it names (verdict 0.01).")


def test_ui_note_says_how_a_term_end_and_an_unnamed_document_were_decided():
    from app.ui_support import check_note

    rec = {"grounded": True, "decided_by": "verbatim", "details": {"quote": {"by": "dates", "term": "computed"}}}
    assert check_note(rec).startswith("The end date is counted by slmrag")
    rec["details"]["quote"]["term"] = "stated"
    assert check_note(rec).startswith("The end date is the one the contract's quoted term sentence names")
    rec["details"]["quote"]["term"] = "perpetual"
    assert check_note(rec).endswith("the term runs until it is terminated.")
    assert "names none of them" in check_note({"grounded": False, "decided_by": "document", "details": {}})


def test_a_reading_below_the_verdict_floor_is_not_found():
    """The reader finds no verdict (.3 < the floor .5) in the one covering document's passage: the answer
    is the model's "not found", with the reader's scores kept for the UI; at a floor of .2 it answers."""
    aims = "This trial tested whether statins lower stroke risk in elderly patients with diabetes."
    q = "Do statins lower stroke risk in elderly diabetic patients?"

    prompt = _doc_prompt("label", [("a", aims)])
    c = compose(FakeGenerator("unused"), prompt, q, AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label"),
                reader=Unsure(1, "no"))
    assert c.shaped.refused and c.shaped.label is None and c.decided_by == "model" and not c.grounded
    assert c.shaped.label_scores["verdict"] == 0.3 and c.shaped.label_by == "reader"
    c = compose(FakeGenerator("unused"), prompt, q, AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label",
                                                                  min_verdict=0.2), reader=Unsure(1, "no"))
    assert not c.shaped.refused and c.shaped.label == "no" and c.grounded


def test_question_words_weighed_by_their_rarity_among_the_documents():
    """Three contracts: "acme", "birch", "crane" are each in one (idf log(1 + 2.5/1.5) = .9808), "contract" and
    "liability" in all three (log(1 + .5/3.5) = .1335), "cap" and "breach" in two (log(1 + 1.5/2.5) = .4700).
    "Does the Acme contract cap liability for breach?" over Birch's clause: 4 of 5 words (.8) counted equally,
    but with rarity weights (2 x .1335 + 2 x .4700) / (.9808 + 2 x .1335 + 2 x .4700) = .5517 - the party the
    question names is what it is about. Acme's own clause covers it whole either way."""
    from app.answers.grounding import WordRarity, question_coverage

    docs = ["Acme contract: liability cap for breach.", "Birch contract: liability cap for breach.",
            "Crane contract: liability."]
    rarity = WordRarity.of_documents(docs)
    assert rarity.documents == 3 and rarity.weight("acme") == pytest.approx(math.log(8 / 3))
    q = "Does the Acme contract cap liability for breach?"
    assert question_coverage(q, docs[1]).score == pytest.approx(0.8)
    birch = question_coverage(q, docs[1], rarity)
    assert birch.score == pytest.approx(2 * (math.log(8 / 7) + math.log(1.6)) / (
        math.log(8 / 3) + 2 * math.log(8 / 7) + 2 * math.log(1.6))) and birch.missing == ["Acme"]
    assert round(birch.score, 4) == 0.5517
    assert question_coverage(q, docs[0], rarity).score == pytest.approx(1.0) == question_coverage(q, docs[0]).score
    # a label whose document is another contract stands with equal weights at .5, not with rarity weights
    settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label",
                              grounding={"question_words": "rarity", "min_label_coverage": 0.6})
    c = compose(FakeGenerator("unused"), _doc_prompt("label", [("b", docs[1])]), q, settings, reader=FakeReader(1, "yes"),
                rarity=rarity)
    assert not c.grounded and c.decided_by == "lexical" and round(c.support.score, 4) == 0.5517
    settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label", grounding={"min_label_coverage": 0.6})
    c = compose(FakeGenerator("unused"), _doc_prompt("label", [("b", docs[1])]), q, settings, reader=FakeReader(1, "yes"),
                rarity=rarity)  # the pack weighs words equally: the rarity passed in is not used
    assert c.grounded


def test_with_no_verdict_a_covering_document_is_quoted_without_a_label():
    """A protocol states what to do, not a verdict: the reader finds none (.3 < .5). "Should patients in
    septic shock receive norepinephrine?" has 5 content words (patient, septic, shock, receive, norepin);
    document a holds 4 (.8), document b 1 (.2). With no_verdict_coverage .75 the selector's best sentence of a
    covering document is quoted - its first choice, from b, is passed over - with no label and the reader's
    scores kept; without a selector, a's sentence sharing most of the question's words; at .85 nothing
    covers enough and the answer stays "not found"."""
    from app.answers.selector import Selection
    from app.ui_support import check_note

    a1 = "Norepinephrine is the first-choice vasopressor for patients in septic shock."
    a2 = "Start it through a peripheral line while central access is placed."
    b = "Patients with asthma should carry a reliever inhaler."
    q = "Should patients in septic shock receive norepinephrine?"

    prompt = _doc_prompt("label", [("b", b), ("a", f"{a2} {a1}")])
    ranked = [Selection(1, b, 0.9), Selection(2, a1, 0.6)]
    for floor, selector in ((0.75, FakeSelector(ranked)), (0.75, None)):
        settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label", no_verdict_coverage=floor)
        c = compose(FakeGenerator("unused"), prompt, q, settings, reader=Unsure(2, "yes"), selector=selector)
        assert c.grounded and not c.shaped.refused and c.shaped.label is None and c.decided_by == "verbatim"
        assert c.shaped.text == f"The documents do not state a verdict on this; they say: \u201c{a1}\u201d [2]"
        assert c.shaped.quote["no_verdict"] and c.shaped.label_scores["verdict"] == 0.3
        note = check_note({"decided_by": c.decided_by, "grounded": True, "details": c.shaped.to_json()})
        assert note.startswith("This pack's trained label reader found no yes/no verdict in the passages (verdict 0.30)")
        assert ("trained sentence selector chose" in note) is (selector is not None)
    settings = AnswerSettings(shapes=["label"], labels=["yes", "no"], default="label", no_verdict_coverage=0.85)
    c = compose(FakeGenerator("unused"), prompt, q, settings, reader=Unsure(2, "yes"), selector=FakeSelector(ranked))
    assert c.shaped.refused and c.decided_by == "model" and not c.grounded


def test_selector_sentence_is_the_extract_answer_and_nothing_is_generated():
    from app.answers.selector import Selection

    settings = AnswerSettings(shapes=["extract"], default="extract")
    gen = FakeGenerator("should not be used")
    texts = [("a", "Zinc lozenges for colds in children were tested."),
             ("a", "Children took 10 mg of zinc twice a day. Colds lasted five days.")]
    c = compose(gen, _doc_prompt("extract", texts), "What dose of zinc did children take?", settings,
                selector=FakeSelector([Selection(2, "Children took 10 mg of zinc twice a day.", 0.97)]))
    assert gen.calls == [] and c.grounded and c.decided_by == "verbatim"
    assert c.shaped.text == "\u201cChildren took 10 mg of zinc twice a day.\u201d [2]"
    assert c.shaped.quote == {"text": "Children took 10 mg of zinc twice a day.", "n": 2, "verbatim": True,
                              "by_model": False, "by": "selector", "score": 0.97}


def test_selector_sentence_from_a_passage_about_something_else_gives_way_to_the_next_best():
    """The selector likes the preamble (it names the parties the question names) best, but that passage
    does not cover "confidentiality obligations last": the next best sentence, whose passage does, is the
    answer. With only the preamble kept, the answer is withheld."""
    from app.answers.selector import Selection

    preamble = "This Agreement is made between Quillon Biotech and Marlowe Analytics."
    term = "The confidentiality obligations of each party last three years after this Agreement ends."

    settings = AnswerSettings(shapes=["extract"], default="extract")
    q = "How long do the confidentiality obligations last after the Quillon and Marlowe agreement ends?"
    ranked = [Selection(1, preamble, 0.95), Selection(2, term, 0.6)]
    c = compose(FakeGenerator("unused"), _doc_prompt("extract", [("a", preamble), ("a", term)]), q, settings,
                selector=FakeSelector(ranked))
    assert c.grounded and c.shaped.cited == [2] and c.shaped.quote["text"] == term
    c = compose(FakeGenerator("unused"), _doc_prompt("extract", [("a", preamble)]), q, settings,
                selector=FakeSelector(ranked[:1]))
    assert not c.grounded and c.decided_by == "lexical"


def test_an_unsure_selector_quotes_the_sentence_that_holds_the_question_words():
    """Under answers.selector_confident the selector's ranking is re-ordered by the question's content words
    it holds (its score breaks ties); at or above it, or with the default 0, its ranking stands."""
    from app.answers.compose import by_question_words
    from app.answers.selector import Selection

    updated = "Last updated: July 1, 2024."
    price = "The list price is USD 149 per year for a single-user license."
    grant = "A single-user license allows one user to install the Software on up to three (3) devices."
    q = "On how many devices may a single-user license be installed?"
    # the question holds 4 content words; the grant sentence all 4, the price 2, the update line none
    ranked = [Selection(1, updated, 0.062), Selection(1, price, 0.040), Selection(1, grant, 0.039)]
    assert [s.sentence for s in by_question_words(ranked, q, ["eula.txt"])] == [grant, price, updated]
    tied = [Selection(1, "Colds lasted five days.", 0.3), Selection(1, "Zinc was given.", 0.2)]
    assert [s.score for s in by_question_words(tied, "What about it?", [""])] == [0.3, 0.2]  # no word: order stands
    # Words that name the document (its title here) do not count: a preamble holds them without answering.
    preamble = "This Single-User License Agreement is between Cobaltline and you."
    named = [Selection(1, preamble, 0.06), Selection(1, grant, 0.04)]
    assert by_question_words(named, q, ["Single-User License Agreement"])[0].sentence == grant
    assert by_question_words(named, "Is the single-user license agreement in force?",
                             ["Single-User License Agreement"])[0].sentence == preamble  # nothing left: order stands

    texts = [("a", f"{updated} {price} {grant}")]
    unsure = AnswerSettings(shapes=["extract"], default="extract", selector_confident=0.5)
    c = compose(FakeGenerator("unused"), _doc_prompt("extract", texts), q, unsure, selector=FakeSelector(ranked))
    assert c.shaped.quote["text"] == grant and c.grounded
    for settings in (AnswerSettings(shapes=["extract"], default="extract"),  # default 0: the ranking stands
                     AnswerSettings(shapes=["extract"], default="extract", selector_confident=0.05)):
        c = compose(FakeGenerator("unused"), _doc_prompt("extract", texts), q, settings, selector=FakeSelector(ranked))
        assert c.shaped.quote["text"] == updated


def test_question_words_weigh_into_the_selectors_ranking():
    """answers.selector_question_weight: logit + weight * share of the question's content words held. Worked by
    hand: logit(0.5) = 0 and logit(0.6) = 0.405; "stroke rate" holds 2 of the question's 2 words (share 1), the
    other sentence none - weight 0.5 lifts the first (0 + 0.5 > 0.405), weight 0.3 does not (0.3 < 0.405)."""
    from app.answers.compose import with_question_words
    from app.answers.selector import Selection

    q = "What was the stroke rate?"
    other = Selection(1, "Patients were followed for two years.", 0.6)
    asked = Selection(2, "The stroke rate was 2.1 % per year.", 0.5)
    assert [s.n for s in with_question_words([other, asked], q, ["a.txt", "b.txt"], 0.5)] == [2, 1]
    assert [s.n for s in with_question_words([other, asked], q, ["a.txt", "b.txt"], 0.3)] == [1, 2]
    # words naming the sentence's document do not count: titled "Stroke rate registry", passage 2 holds no word
    assert [s.n for s in with_question_words([other, asked], q, ["a.txt", "Stroke rate registry"], 0.5)] == [1, 2]
    # only the selector's best five are re-ordered: a sixth holding every word stays sixth
    low = [Selection(1, f"Follow-up visit {i}.", 0.6) for i in range(5)] + [asked]
    assert with_question_words(low, q, ["a.txt", "b.txt"], 0.5)[5] is asked


def test_a_question_names_a_document_by_a_word_of_its_file_name_that_the_others_lack():
    from app.answers.grounding import named_documents

    names = ["AMAZON_2019_10K.pdf", "BESTBUY_2019_10K.pdf", "MGMRESORTS_2022Q4_EARNINGS.pdf", "3M_2018_10K.pdf"]
    assert named_documents("What was Amazon's revenue in 2019?", names) == [True, False, False, False]
    assert named_documents("What was Best Buy's revenue in 2019?", names) == [False, True, False, False]
    assert named_documents("Which region led MGM's EBITDAR?", names) == [False, False, True, False]
    assert named_documents("What was 3M's capital expenditure?", names) == [False, False, False, True]
    # a year, a form code and a word for the kind of document name nothing
    assert named_documents("What were 2019 10K earnings?", names) == [False] * 4
    # a word every kept document shares names them all when the question has it
    assert named_documents("What was Amazon's revenue?", ["AMAZON_2017_10K.pdf", "AMAZON_2019_10K.pdf"]) == [True, True]
    # a name's initials joined by "&" or "n": "JnJ" / "J&J" is JOHNSON_JOHNSON_..., not a one-word name
    jj = ["JOHNSON_JOHNSON_2023_8K_dated-2023-08-30.pdf", "JUNIPER_2023_10K.pdf", "AMAZON_2019_10K.pdf"]
    assert named_documents("Which segment of JnJ is discontinued?", jj) == [True, False, False]
    assert named_documents("What did J&J gain from the separation?", jj) == [True, False, False]
    assert named_documents("What was P&G's revenue?", jj) == [False, False, False]  # no such document


def test_compose_answers_only_from_a_document_the_question_names_when_the_pack_asks():
    """Two companies' filings state revenue for 2019; 'revenue in 2019' names neither (nothing is
    generated, decided by "document"), 'Birch's revenue' names the second, and an answer citing the first
    is withheld. Off (the default), the first filing's figure stands."""
    a = "Revenue in 2019 was $12.0 million, up from $10.0 million."
    b = "Revenue in 2019 was $40.5 million, up from $38.0 million."
    ps = [Passage(vid=i, doc_id=d, source=f"/{d}", name=d, page=None, text=t, heading="", start=0, end=len(t))
          for i, (d, t) in enumerate([("ACME_2019_10K.pdf", a), ("BIRCH_2019_10K.pdf", b)])]
    prompt = Prompt([{"role": "user", "content": "x"}], ps, 64, "free")
    on = AnswerSettings(shapes=["free"], default="free", grounding={"name_the_document": True})
    gen = FakeGenerator("Revenue in 2019 was $12.0 million [1].")
    c = compose(gen, prompt, "What was revenue in 2019?", on)
    assert gen.calls == [] and not c.grounded and c.decided_by == "document"
    assert not c.other_document  # the question names no document
    c = compose(gen, prompt, "What was Birch's revenue in 2019?", on)
    assert not c.grounded and c.decided_by == "document"  # its answer cites ACME's filing
    assert c.other_document  # ... while the question names Birch's: the user is told that, not "name one"
    from app.answer import nearest_sources
    assert c.named == [False, True] and nearest_sources(ps, c.named) == [ps[1], ps[0]]  # Birch's listed first
    assert nearest_sources(ps) == ps and nearest_sources(ps, None, n=1) == ps[:1]
    c = compose(FakeGenerator("Revenue in 2019 was $40.5 million [2]."), prompt, "What was Birch's revenue in 2019?", on)
    assert c.grounded and c.shaped.cited == [2]
    off = AnswerSettings(shapes=["free"], default="free")
    assert compose(gen, prompt, "What was revenue in 2019?", off).grounded
    # Only ACME's filing was kept, but the index also holds Birch's: still unnamed.
    only_acme = Prompt([{"role": "user", "content": "x"}], ps[:1], 64, "free")
    index = {p.doc_id: p.name for p in ps}
    gen = FakeGenerator("Revenue in 2019 was $12.0 million [1].")
    c = compose(gen, only_acme, "What was revenue in 2019?", on, documents=index)
    assert gen.calls == [] and c.decided_by == "document"
    assert compose(gen, only_acme, "What was Acme's revenue in 2019?", on, documents=index).grounded
    assert compose(gen, only_acme, "What was revenue in 2019?", on).grounded  # one document to answer from


def test_dates_and_durations_as_contracts_write_them():
    from datetime import date

    from app.answers.dates import add, find_dates, find_durations

    assert [f.value for f in find_dates("made as of the 20th day of March 2002, and dated 3/15/2019")] == [
        date(2002, 3, 20), date(2019, 3, 15)]
    assert [f.value for f in find_dates("effective Sept. 24, 2013; not February 30, 2020")] == [date(2013, 9, 24)]
    assert [f.value for f in find_durations("for three (3) years, then a two-year term, or ninety (90) days")] == [
        (3, "year"), (2, "year"), (90, "day")]
    assert add(date(2019, 3, 15), 3, "year") == date(2022, 3, 15)
    assert add(date(2012, 2, 29), 1, "year") == date(2013, 2, 28)  # no 29 February in 2013
    assert add(date(2019, 1, 31), 1, "month") == date(2019, 2, 28)
    with pytest.raises(ValueError):  # term_end skips such a sentence rather than fail the answer
        add(date(9990, 1, 1), 20, "year")


def test_a_term_end_is_counted_from_the_documents_start_date():
    """'On what date does the term expire?': the best term sentence gives a duration, the preamble (a kept
    passage of the same contract) the Effective Date; the answer is their sum with both cited, nothing
    generated. A notice period is no term; a term sentence naming its end date gives that date, ranked
    above the preamble or not; one with no end says so; an unlikely sentence (score < .5) is not read."""
    from app.answers.selector import Selection

    preamble = "This Supply Agreement is entered into as of March 15, 2019 (the Effective Date) by Acme and Birch."
    term = "This Agreement shall remain in force for a period of three (3) years from the Effective Date."
    notice = "Either party may terminate on ninety (90) days notice prior to the end of the term."
    prompt = _doc_prompt("extract", [("c", preamble), ("c", term), ("c", notice)])
    settings = AnswerSettings(shapes=["extract"], default="extract", term_end=r"\bwhat date\b.*\bexpire",
                              grounding={"check": "none"})
    q = "On what date will the initial term of the Acme / Birch supply agreement expire?"
    gen = FakeGenerator("unused")
    ranked = [Selection(3, notice, 0.9), Selection(2, term, 0.8), Selection(1, preamble, 0.7)]
    c = compose(gen, prompt, q, settings, selector=FakeSelector(ranked))
    assert gen.calls == [] and c.grounded
    assert c.shaped.text == (f"March 15, 2022 \u2014 March 15, 2019 [1] + three (3) years: \u201c{term}\u201d [2]")
    assert c.shaped.cited == [2, 1] and c.shaped.calculation["value"] == "2022-03-15"
    assert compose(gen, prompt, q, settings, selector=FakeSelector(
        [Selection(1, preamble, 0.9), Selection(2, term, 0.4)])).shaped.text == f"\u201c{preamble}\u201d [1]"
    explicit = "The Contract Period runs from March 15, 2019 through December 31, 2021."
    c = compose(gen, _doc_prompt("extract", [("c", preamble), ("c", explicit)]), q, settings,
                selector=FakeSelector([Selection(1, preamble, 0.95), Selection(2, explicit, 0.9)]))
    assert c.shaped.calculation is None and c.shaped.text == f"December 31, 2021 \u2014 \u201c{explicit}\u201d [2]"
    endless = "This Agreement shall remain in effect until terminated by the Parties."
    c = compose(gen, _doc_prompt("extract", [("c", endless)]), q, settings, selector=FakeSelector([Selection(1, endless, 0.9)]))
    assert c.shaped.text.startswith("No end date: the term runs until it is terminated (perpetual)")
    # a question that does not ask for an end date is quoted as any extract answer
    c = compose(gen, prompt, "How long is the initial term of the Acme / Birch agreement?", settings,
                selector=FakeSelector(ranked[1:]))
    assert c.shaped.calculation is None and c.shaped.text == f"\u201c{term}\u201d [2]"


def test_a_bad_term_end_pattern_selector_option_or_row_name_is_refused_up_front(tmp_path):
    from typer.testing import CliRunner

    from app.cli import app as cli

    with pytest.raises(ValueError, match="(?s)term_end.*not a valid regular expression"):
        AnswerSettings(term_end="(on what date")
    res = CliRunner().invoke(cli, ["adapt", "selector", "--pack", "medical", "--train", str(tmp_path), "--positives", "nope"])
    assert res.exit_code != 0 and "--positives must be one of evidence, answer" in res.output
    res = CliRunner().invoke(cli, ["adapt", "selector", "--pack", "medical", "--train", str(tmp_path), "--shape", "free"])
    assert res.exit_code != 0 and "--shape must be one of extract, label" in res.output
    with pytest.raises(ValueError, match="row_names: 'cogs' needs a phrase and at least one other name"):
        AnswerSettings(row_names={"cogs": [" "]})
    assert AnswerSettings(row_names={"  COGS ": ["cost of  sales"]}).row_names == {"cogs": ["cost of sales"]}


def test_a_ratio_from_two_cited_statement_chunks_is_shown_with_both_and_grounded():
    top = "Consolidated Balance Sheets\n(in millions)\nAs of December 31, 2019 2018\nTotal current assets 500 400\n"
    bottom = "Consolidated Balance Sheets\n(in millions)\nAs of December 31, 2019 2018\nTotal current liabilities 250 250\n"
    settings = AnswerSettings(shapes=["calculate", "free"], default="calculate", ratios={
        "current ratio": {"of": ["total current assets"], "per": ["total current liabilities"], "percent": False}})
    gen = FakeGenerator("should not be used")
    c = compose(gen, _doc_prompt("calculate", [("a", top), ("a", bottom)]), "What is the current ratio in 2019?", settings)
    assert gen.calls == [] and c.grounded and c.shaped.cited == [1, 2]
    assert c.shaped.text == "2 = (500 / 250) [1] [2]", c.shaped.text
    assert c.shaped.calculation["row"] == "Total current assets / Total current liabilities"
