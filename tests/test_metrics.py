"""Tiny, hand-checkable tests for app.evaluation.metrics (no data files, no models)."""

from __future__ import annotations

import pytest

from app.evaluation.metrics import (
    alnum_key,
    answer_correct,
    exact_match,
    extract_label,
    first_hit_rank,
    mean,
    normalize_text,
    numbers_match,
    parse_numbers,
    passage_holds_evidence,
    percentile,
    recall_at_k,
    reciprocal_rank,
    token_f1,
    tokens,
)

# --- normalisation ----------------------------------------------------------------------------


def test_normalize_text():
    # full-width "Ｈ" -> "h" (NFKC), tabs/newlines/non-breaking space collapse to one space
    assert normalize_text("  Ｈello\n\tWORLD\u00a0 again ") == "hello world again"


def test_alnum_key_and_tokens():
    assert alnum_key("U.S. $1,234 (net)") == "us1234net"
    assert alnum_key("ﬁne  print") == "fineprint"  # the "ﬁ" ligature expands under NFKC
    assert tokens("Net-income: $1,234!") == ["net", "income", "1", "234"]
    assert tokens("naïve") == ["naïve"]


# --- ranking ----------------------------------------------------------------------------------


def test_ranking_known_list():
    hits = [False, True, False]
    assert first_hit_rank(hits) == 2
    assert recall_at_k(hits, 1) == 0.0
    assert recall_at_k(hits, 2) == 1.0
    assert recall_at_k(hits, 3) == 1.0
    assert reciprocal_rank(hits) == 0.5


def test_ranking_no_hit_and_first_hit():
    assert first_hit_rank([False, False]) is None
    assert reciprocal_rank([False, False]) == 0.0
    assert recall_at_k([False, False], 10) == 0.0  # k beyond the list is fine
    assert first_hit_rank([True, True]) == 1
    assert reciprocal_rank([False, False, False, True]) == 0.25
    with pytest.raises(ValueError):
        recall_at_k([True], 0)


def test_mean_skips_none():
    assert mean([1, 0, None, 0.5]) == 0.5  # (1 + 0 + 0.5) / 3
    assert mean([True, False, False, False]) == 0.25
    assert mean([]) is None
    assert mean([None]) is None


def test_percentile_linear():
    assert percentile([4, 1, 3, 2], 50) == 2.5  # sorted 1 2 3 4, position 1.5
    assert percentile([1, 2, 3, 4], 0) == 1.0
    assert percentile([1, 2, 3, 4], 100) == 4.0
    assert percentile([10, 20], 25) == 12.5
    assert percentile([7], 90) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1], 101)


# --- token F1 / EM ----------------------------------------------------------------------------


def test_token_f1_known_values():
    # pred {cat, sat} (article dropped), gold {cat, sat, down}: P = 2/2, R = 2/3, F1 = 0.8
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("The Cat!", "cat") == 1.0
    assert token_f1("1,234", "1234") == 1.0  # punctuation deleted, as in SQuAD
    assert token_f1("", "") == 1.0
    assert token_f1("cat", "") == 0.0
    # bag of tokens: "cat cat" vs "cat": common 1, P = 1/2, R = 1, F1 = 2/3
    assert token_f1("cat cat", "cat") == pytest.approx(2 / 3)


def test_exact_match():
    assert exact_match("The  New York.", "new york") is True
    assert exact_match("New York law", "New York") is False


# --- labels -----------------------------------------------------------------------------------


def test_extract_label():
    assert extract_label("Yes, because the trial showed it.") == "yes"
    assert extract_label("The answer is maybe.") == "maybe"
    assert extract_label("**No**. The data do not support it.") == "no"
    # no leading label: the first label anywhere wins
    assert extract_label("There is no clear evidence, so yes overall") == "no"
    assert extract_label("Maybe. No firm evidence either way.") == "maybe"
    assert extract_label("Nothing is known; not established.") is None  # "not" is not "no"
    assert extract_label("") is None


# --- numbers ----------------------------------------------------------------------------------


def test_parse_numbers():
    assert parse_numbers("$(1,234.5) million") == [-1234500000.0]
    assert parse_numbers("12.5%") == [12.5]
    assert parse_numbers("12.5 percent") == [12.5]
    assert parse_numbers("(1,234)") == [-1234.0]
    assert parse_numbers("fell -48.18% to 3 k") == [-48.18, 3000.0]
    assert parse_numbers("$2.1bn and €5 B") == pytest.approx([2.1e9, 5e9])
    assert parse_numbers("FY2022 Q2 results") == []  # digits glued to letters are labels
    assert parse_numbers("12 months") == [12.0]  # "m" of "months" is not a scale word
    assert parse_numbers("(3.4% jump)") == [3.4]  # parentheses around more than a number
    assert parse_numbers("no numbers here") == []


def test_numbers_match_scale_and_restatement():
    # TAT-QA style: gold 21234 with scale "thousand" = 21,234,000; "$21.2 million" is within 1%
    assert numbers_match("about $21.2 million", "21234", scale="thousand") is True
    assert numbers_match("about $25 million", "21234", scale="thousand") is False
    # ratio form of a percentage only counts when the scale says percent
    assert numbers_match("-0.4818", "-48.18", scale="percent") is True
    assert numbers_match("-0.4818", "-48.18", scale="") is False
    # restated scale without any scale field: 1.291 billion / 1e6 = 1291 (a table in millions)
    assert numbers_match("$1.291 billion", "1291") is True
    assert numbers_match("$1.291 billion", "1391") is False
    # sign carried by words
    assert numbers_match("it decreased by 48.18%", "-48.18%") is True
    with pytest.raises(ValueError):
        numbers_match("1", "1", scale="dozens")


def test_numbers_match_tolerance_and_years():
    assert numbers_match("93.9", "93.86") is True  # 0.04% off
    assert numbers_match("95", "93.86") is False  # 1.2% off
    assert numbers_match("95", "93.86", rel_tol=0.02) is True
    gold = "Margins fell from 36.8% in FY 2021 to 34.6% in FY 2022."
    assert numbers_match("Yes, in 2022.", gold) is False  # repeating a year is not an answer
    assert numbers_match("It was 34.6%.", gold) is True
    assert numbers_match("It happened in 2018.", "2018") is True  # all-year gold: years count
    assert numbers_match("no figure", "5") is False


# --- passage holds evidence -------------------------------------------------------------------

TEXT_Q = {
    "doc": "notes_1.txt",
    "evidence": "The cat sat on the mat.",
    "source": "covid-qa",
}


def test_text_evidence_substring():
    passage = "Intro line.\nTHE CAT  sat on\nthe mat. More text follows."
    assert passage_holds_evidence(passage, "/corpus/medical/notes_1.txt", None, TEXT_Q) is True
    assert passage_holds_evidence(passage, "C:\\corpus\\notes_1.txt", None, TEXT_Q) is True
    assert passage_holds_evidence(passage, "notes_2.txt", None, TEXT_Q) is False  # wrong doc
    assert passage_holds_evidence("A dog ran.", "notes_1.txt", None, TEXT_Q) is False


def test_text_passage_inside_evidence_and_spans():
    assert passage_holds_evidence("cat sat on", "notes_1.txt", None, TEXT_Q) is True
    two = {**TEXT_Q, "evidence_spans": ["The cat sat on the mat.", "A dog barked twice."]}
    assert passage_holds_evidence("Then a dog barked twice.", "notes_1.txt", None, two) is True
    assert passage_holds_evidence("Then a dog barked twice.", "notes_1.txt", None, TEXT_Q) is False


def test_text_long_evidence_overlap():
    # 40 distinct words "w00 ... w39": 40 * 4 - 1 = 159 characters
    evidence = " ".join(f"w{i:02d}" for i in range(40))
    assert len(evidence) == 159
    q = {"doc": "long.md", "evidence": evidence}
    # the chunk boundary cuts the span: the last 100 characters are shared (>= 80) -> hit
    assert passage_holds_evidence("zz " + evidence[-100:] + " yy", "long.md", None, q) is True
    # only 70 characters shared (< 80) -> miss
    assert passage_holds_evidence("zz " + evidence[-70:] + " yy", "long.md", None, q) is False


PDF_Q = {"doc": "report.pdf", "evidence": "Total revenue 17,606", "page": 54, "pages": [54]}


def test_pdf_page_match():
    assert passage_holds_evidence("anything", "report.pdf", 54, PDF_Q) is True
    # the page decides: the right text on the wrong page is a miss
    assert passage_holds_evidence("Total revenue 17,606", "report.pdf", 53, PDF_Q) is False
    assert passage_holds_evidence("anything", "other.pdf", 54, PDF_Q) is False
    assert passage_holds_evidence("x", "report.pdf", 2, {"doc": "report.pdf", "pages": [1, 2]})


def test_pdf_fuzzy_fallback_without_page():
    q = {"doc": "report.pdf", "evidence": "Total revenue 17,606"}
    # another extractor's hyphenation: same alnum key "totalrevenue17606", although only 3 of
    # the 4 evidence tokens [total, revenue, 17, 606] survive ("reve", "nue")
    hyphenated = "Total reve-\nnue 17,606"
    assert passage_holds_evidence(hyphenated, "report.pdf", 3, q, fuzzy_threshold=0.9) is True
    near = "Total revenue 17,607"  # tokens: 3 of 4 = 0.75
    assert passage_holds_evidence(near, "report.pdf", 3, q) is True
    assert passage_holds_evidence(near, "report.pdf", 3, q, fuzzy_threshold=0.9) is False
    # evidence tokens [operating, income, 6, 098, 5, 802]; the passage has 4 of 6 = 0.667
    q2 = {"doc": "report.pdf", "evidence": "Operating income 6,098 5,802"}
    passage = "Operating income was 6,098 this year"
    assert passage_holds_evidence(passage, "report.pdf", None, q2) is True
    assert passage_holds_evidence(passage, "report.pdf", None, q2, fuzzy_threshold=0.7) is False
    # the question has a page but the passage does not: fuzzy fallback still applies
    assert passage_holds_evidence("Total revenue 17,606", "report.pdf", None, PDF_Q) is True
    assert passage_holds_evidence("Net loss", "report.pdf", None, PDF_Q) is False


# --- answer_correct ---------------------------------------------------------------------------


def test_answer_correct_label():
    q = {"source": "pubmedqa", "answer": "yes"}
    r = answer_correct("Yes, because the trial showed benefit.", q)
    assert r["kind"] == "label" and r["correct"] is True and r["em"] is False
    assert answer_correct("No.", q)["correct"] is False
    assert answer_correct("I cannot tell.", q)["correct"] is False


def test_answer_correct_cuad():
    yes = answer_correct("Yes, there is such a clause.", {"source": "cuad", "answer": "Yes"})
    assert yes["kind"] == "evidence" and yes["correct"] is None
    q = {"source": "cuad", "answer": "New York"}
    # pred {new, york, law} vs gold {new, york}: P = 2/3, R = 1, F1 = 0.8
    r = answer_correct("New York law", q)
    assert r["kind"] == "text" and r["f1"] == pytest.approx(0.8) and r["correct"] is True
    # 7 predicted tokens, 2 shared: P = 2/7, R = 1, F1 = 4/9 < 0.5
    r = answer_correct("The contract is governed by New York law", q)
    assert r["f1"] == pytest.approx(4 / 9) and r["correct"] is False


def test_answer_correct_numeric_and_text_finance():
    q = {"source": "tat-qa", "answer": "21234 thousand", "scale": "thousand"}
    r = answer_correct("It was about $21.2 million.", q)
    assert r["kind"] == "numeric" and r["correct"] is True
    assert answer_correct("It was about $30 million.", q)["correct"] is False
    # a citation marker is not a figure: "[2]" is not 2 billion
    ebitda = {"source": "financebench", "answer": "Adj. EBITDA was $2,018mn in FY 2023"}
    assert answer_correct("Further details can be found in this release [2].", ebitda)["correct"] is False
    assert answer_correct("Adjusted EBITDA was $2,018 million [2].", ebitda)["correct"] is True
    fb = {"source": "financebench", "answer": "Richard A. Johnson"}
    # gold normalises to {richard, johnson} ("A." is an article once punctuation goes):
    # pred {johnson}: P = 1, R = 1/2, F1 = 2/3 >= 0.5
    r = answer_correct("Johnson", fb)
    assert r["kind"] == "text" and r["f1"] == pytest.approx(2 / 3) and r["correct"] is True
    assert r["em"] is False
    assert answer_correct("Mary Barra", fb)["correct"] is False
