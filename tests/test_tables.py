"""Calculations read off a table row (app/answers/tables.py): exact cases checkable by hand, no model."""

from __future__ import annotations

import pytest

from app.answers.arithmetic import evaluate
from app.answers.tables import table_calculation

PENSION = """| (In thousands) | 2019 | 2018 | 2017 |
| --- | --- | --- | --- |
| Service cost | $ 50 | $ 5,809 | $ 3,055 |
| Interest cost | 30,327 | 28,870 | 21,882 |
| Expected return on plan assets | (34,627) | (38,640) | (28,459) |
| Amortization of: |  |  |  |
| Net actuarial loss | 2,890 | 6,110 | 6,244 |
"""
# A title row above the years, as ingest writes multi-row headers.
RESERVE = """|  |  | Year Ended December 31, |  |
| --- | --- | --- | --- |
|  | 2019 | 2018 | 2017 |
| Warranty reserve, beginning of period | $8,220 | $8,306 | $2,158 |
| Charges against warranty reserve | (1,234) | (2,000) | - |
"""


@pytest.mark.parametrize("question, formula, value", [
    # average over a range: every year in it, oldest first
    ("What was the average net actuarial loss for 2017-2019?", "(6,244 + 6,110 + 2,890) / 3", 5081.3333),
    # change: the later year minus the earlier, whatever order the question names them in
    ("What was the service cost increase / (decrease) from 2018 to 2019?", "50 - 5,809", -5759),
    ("How much did interest cost change between 2019 and 2018?", "30,327 - 28,870", 1457),
    ("What was the percentage change in interest cost between 2018 and 2019?",
     "((30,327 - 28,870) / 28,870) * 100", 5.0468),
    # parenthesised cells are negative
    ("What was the change in expected return on plan assets from 2017 to 2018?", "(-38,640) - (-28,459)", -10181),
    ("What was the change in charges against warranty reserve between 2018 and 2019?", "(-1,234) - (-2,000)", 766),
])
def test_the_form_and_the_years_fix_the_formula(question, formula, value):
    tc = table_calculation(question, ["Some prose first.", PENSION + "\n" + RESERVE])
    assert tc is not None and tc.formula == formula and tc.n == 2
    assert evaluate(tc.formula).value == pytest.approx(value, abs=1e-3)


@pytest.mark.parametrize("question", [
    "What was the interest cost in 2019?",  # no arithmetic form
    "What was the change in interest cost in 2019?",  # one year: the form needs two
    "What was the change in revenue between 2018 and 2019?",  # no row the question names
    "What was the change in charges against warranty reserve between 2017 and 2018?",  # a "-" cell
    "What was the change in interest cost between 2015 and 2016?",  # years not in the table
])
def test_anything_ambiguous_leaves_the_formula_to_the_model(question):
    assert table_calculation(question, [PENSION, RESERVE]) is None


def test_the_earliest_form_word_is_the_operation():
    shares = "| | 2019 | 2018 |\n| --- | --- | --- |\n| Weighted average common shares, basic | 16,223 | 16,041 |\n"
    tc = table_calculation("What is the change in weighted average common shares, basic between 2018 and 2019?", [shares])
    assert tc.operation == "change" and tc.formula == "16,223 - 16,041"
    tc = table_calculation("What is the average weighted average common shares, basic for 2018 and 2019?", [shares])
    assert tc.operation == "average" and tc.formula == "(16,041 + 16,223) / 2"
    # "percentage change" starts at "percentage", before its own "change"
    tc = table_calculation("What is the percentage change in weighted average common shares, basic from 2018 to 2019?",
                           [shares])
    assert tc.operation == "percent_change"


def test_the_row_the_question_names_most_fully_wins():
    # "cost" alone is in both "Service cost" and "Interest cost"; the question names only one of them fully
    tc = table_calculation("What was the change in interest cost between 2018 and 2019?", [PENSION])
    assert tc.row == "Interest cost" and tc.years == ["2018", "2019"] and tc.operation == "change"


def test_period_headers_name_their_year_and_change_columns_are_not_years():
    balance = ("| | December 31, 2019 | December 31, 2018 | 2019 vs. 2018 |\n| --- | --- | --- | --- |\n"
               "| Accounts receivable, net | 4,512 | 4,100 | 412 |\n")
    tc = table_calculation("What was the change in accounts receivable, net between 2018 and 2019?", [balance])
    assert tc.formula == "4,512 - 4,100" and tc.years == ["2018", "2019"]
    fiscal = "| | Fiscal 2019 | FY2018 |\n| --- | --- | --- |\n| Net sales | 930 | 880 |\n"
    assert table_calculation("What was the average net sales for 2018 and 2019?", [fiscal]).formula == "(880 + 930) / 2"
    # a header that names two years (a range) or another figure is not a year column
    ranges = "| | 2021 - 2022 | 2023 Plan 2 |\n| --- | --- | --- |\n| Payments | 10 | 20 |\n"
    assert table_calculation("What was the change in payments between 2022 and 2023?", [ranges]) is None
