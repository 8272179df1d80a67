"""Calculations read off a table row (app/answers/tables.py): exact cases checkable by hand, no model."""

from __future__ import annotations

import pytest

from app.answers.arithmetic import evaluate
from app.answers.tables import (TableCell, defined_calculation, ratio_calculation, share_calculation, table_calculation,
                                table_value)
from app.settings import RatioSettings
from app.table_text import plain_tables

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
    # the question defines its own metric: the average it names is one of its parts, not the answer
    "What is the DPO for 2019? DPO is defined as: 365 * (average interest cost between 2018 and 2019) / service cost.",
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


# ---------------------------------------------------------------------------------------------- one cell
# A balance sheet as PDFium writes it: single-spaced rows, the periods one date part per line, label lines
# ("ASSETS") between the header and the rows, the units in a line above.
STATEMENT = """CONSOLIDATED BALANCE SHEETS
(amounts in thousands)
August 29,
2021
August 30,
2020
ASSETS
Cash and cash equivalents $ 11,258 $ 12,277
Receivables, net 1,803 1,550
Total current assets 29,505 28,120
Total assets $ 59,268 $ 55,556
LIABILITIES
Total current liabilities 29,441 24,844
Total liabilities (1) 41,190 —
"""
SEGMENTS = """| | 2019 | 2018 |
| --- | --- | --- |
| Customer A | $3.8 | $7.5 |
| Customer B | $10.2 | 1.1 |
| Total | $14.0 | $8.6 |
"""


def test_plain_text_statements_are_read_as_tables_of_years():
    (cols, rows, sections), = plain_tables(STATEMENT)
    assert cols == {1: "2021", 2: "2020"}
    assert rows[0] == ["Cash and cash equivalents", "11,258", "12,277"]  # currency signs are not cells
    assert ["Total liabilities (1)", "41,190", "—"] in rows  # a dash is an empty cell, kept in its column
    assert sections == ["ASSETS"] * 4 + ["LIABILITIES"] * 2  # the lines without figures that head the rows
    (_, _, sections), = plain_tables("Year Ended June 30, 2016 2015\n(In millions)\nRevenue 85,320 93,580\n")
    assert sections == [""]  # a note on units is no section
    # one line of periods holding both years, and a new header of periods starting the next table
    two = "Year Ended June 30, 2016 2015\nRevenue 85,320 93,580\nAs of December 31, 2017 2016\nAssets 10 20\n"
    assert plain_tables(two) == [({1: "2016", 2: "2015"}, [["Revenue", "85,320", "93,580"]], [""]),
                                 ({1: "2017", 2: "2016"}, [["Assets", "10", "20"]], [""])]


@pytest.mark.parametrize("question, row, year, cell", [
    ("What were total assets at the end of FY2021?", "Total assets", "2021", "59,268"),
    ("What was the total current liabilities in 2020 (in USD millions)?", "Total current liabilities", "2020", "24,844"),
    ("How much cash and cash equivalents did the company hold in 2020?", "Cash and cash equivalents", "2020", "12,277"),
    ("What was the revenue from Customer B in 2019?", "Customer B", "2019", "$10.2"),
])
def test_a_line_item_in_one_year_is_the_cell_under_it(question, row, year, cell):
    found = table_value(question, ["Prose without a table.", STATEMENT + "\n" + SEGMENTS])
    assert found == TableCell(2, row, year, cell)


@pytest.mark.parametrize("question", [
    "What was the change in total assets between 2020 and 2021?",  # an arithmetic form: table_calculation's
    "What were total assets in 2020 and 2021?",  # two years
    "What were total assets?",  # no year
    "Which was larger in 2021, total assets or total liabilities?",  # asks which, not for a figure
    "Among total assets and total current assets, which grew most by 2021?",  # ... wherever "which" stands
    "What is the 2021 leverage, defined as total liabilities / total assets?",  # a metric it defines
    "What were total liabilities in 2020?",  # the cell is a dash
    "What was goodwill in 2021?",  # no row the question names
    "What was the revenue from Customer C in 2019?",  # "Customer A" / "Customer B" are other rows
    "What were total sales in 2019?",  # a "Total" row does not say what it totals
])
def test_no_single_cell_no_answer(question):
    assert table_value(question, [STATEMENT, SEGMENTS]) is None


# One statement cut into two chunks, as ingest cuts it, each with the header of years: both hold a row labelled
# "Diluted", one under "Earnings per share", one under "Weighted-average shares outstanding".
EPS_CHUNK = ("(in thousands of USD, except per-share amounts)\n 2023 2022\nNet income 72,300 63,350\n"
             "Earnings per share\nBasic 2.52 2.18\nDiluted 2.50 2.16\n")
SHARES_CHUNK = ("(in thousands of USD, except per-share amounts)\n 2023 2022\n"
                "Weighted-average shares outstanding (in thousands)\nBasic 28,650 29,050\nDiluted 28,900 29,300\n")
EPS_MARKDOWN = ("| | 2023 | 2022 |\n| --- | --- | --- |\n| Weighted-average shares outstanding | | |\n"
                "| Diluted | 28,900 | 29,300 |\n| Earnings per share | | |\n| Diluted | 2.50 | 2.16 |\n")


@pytest.mark.parametrize("passages", [[SHARES_CHUNK, EPS_CHUNK], [EPS_CHUNK, SHARES_CHUNK], [EPS_MARKDOWN]])
def test_rows_of_the_same_label_are_told_apart_by_the_section_the_question_names(passages):
    """Before sections were read, the better-ranked chunk's "Diluted" won: the share count, 28,900, answered a
    question about earnings per share (the finance starter pack's own example)."""
    eps = next(n for n, p in enumerate(passages, start=1) if "2.50" in p)
    shares = next(n for n, p in enumerate(passages, start=1) if "28,900" in p)
    q = "What was Acme's diluted earnings per share for 2023?"
    assert table_value(q, passages) == TableCell(eps, "Diluted", "2023", "2.50")
    q = "How many diluted shares were outstanding in 2023?"
    assert table_value(q, passages) == TableCell(shares, "Diluted", "2023", "28,900")
    q = "What was the change in diluted earnings per share between 2022 and 2023?"
    assert table_calculation(q, passages).formula == "2.50 - 2.16"


def test_a_row_is_named_with_its_section_when_the_section_says_more():
    from app.answers.shapes import value_from_table

    cell = table_value("How many diluted shares were outstanding in 2023?", [SHARES_CHUNK])
    assert cell.section == "Weighted-average shares outstanding (in thousands)"
    assert value_from_table(cell, [SHARES_CHUNK], "").text == (
        "28,900 (in thousands) \u2014 Weighted-average shares outstanding (in thousands): Diluted, 2023 [1]")
    from app.ui_support import check_note
    lookup = value_from_table(cell, [SHARES_CHUNK], "").to_json()["lookup"]
    assert lookup["section"] == cell.section and check_note({"decided_by": "lexical", "details": {"lookup": lookup}}) \
        .startswith("Read off the table in [1] by slmrag, not generated: the row \u201cDiluted\u201d under "
                    "\u201cWeighted-average shares outstanding (in thousands)\u201d, the column for 2023.")
    assert TableCell(1, "Total assets", "2021", "1", "ASSETS").label == "Total assets"  # the section adds nothing
    assert TableCell(1, "Net income", "2021", "1").label == "Net income"  # no section
    assert TableCell(1, "AMER", "2018", "1", "Total assets:").label == "Total assets: AMER"  # one colon
    prose = "We have also experienced fluctuations in our net income as a result of gains"
    assert TableCell(1, "Net income", "2021", "1", prose).label == "Net income"  # a stray line of prose
    assert TableCell(1, "Net income", "2021", "1", "Net Sales of $3.2 Billion").label == "Net income"  # figures


def test_a_year_in_two_columns_is_not_one_cell():
    two_currencies = "| | 2019 | 2019 |\n| --- | --- | --- |\n| Carrying value | 79,647.3 | 24.3 |\n"
    assert table_value("What was the carrying value in 2019?", [two_currencies]) is None


def test_a_cell_is_shown_with_its_tables_unit_except_a_per_share_figure():
    from app.answers.shapes import value_from_table

    statement = ("(in thousands of USD, except per-share amounts)\nYear Ended December 31, 2023 2022\n"
                 "Net income 72,300 63,350\nEarnings per share\nDiluted 2.50 2.16\n")
    q = "What was diluted earnings per share in 2023?"
    assert value_from_table(table_value(q, [statement]), [statement], q).text == (
        "2.50 \u2014 Earnings per share: Diluted, 2023 [1]")  # the row under its section: diluted what
    q = "What was net income in 2023, in USD millions?"
    assert value_from_table(table_value(q, [statement]), [statement], q).text == (
        "72,300 (in thousands) = 72.30 million \u2014 Net income, 2023 [1]")


def test_a_per_share_calculation_is_not_shown_in_the_tables_unit():
    from app.answers.shapes import calculate_from_table

    statement = ("| (in thousands of USD, except per-share amounts) | 2023 | 2022 |\n| --- | --- | --- |\n"
                 "| Net income | 72,300 | 63,350 |\n| Diluted earnings per share | 2.50 | 2.16 |\n")
    q = "What was the change in diluted earnings per share between 2022 and 2023?"
    assert calculate_from_table(table_calculation(q, [statement]), [statement], q).text == "0.34 = 2.50 - 2.16 [1]"
    q = "What was the change in net income between 2022 and 2023?"
    assert calculate_from_table(table_calculation(q, [statement]), [statement], q).text == (
        "8,950.00 thousands = 72,300 - 63,350 [1]")


INCOME = """INCOME STATEMENTS
(In millions)
Year Ended June 30, 2016 2015
Revenue 85,320 93,580
Cost of revenue 32,780 33,038
Gross margin 52,540 60,542
Effective tax rate 19.5% 21.0%
"""
NAMES = {"cogs": ["cost of revenue", "cost of sales"], "net sales": ["revenue"]}


def test_a_line_item_named_otherwise_in_the_table_is_read_by_the_packs_row_names():
    """"COGS" shares no word with "Cost of revenue": only the pack's row_names make it that row; the same
    reading serves a calculation ("net sales" read as "revenue")."""
    q = "What is the FY2016 COGS for the company?"
    assert table_value(q, [INCOME]) is None
    assert table_value(q, [INCOME], row_names=NAMES) == TableCell(1, "Cost of revenue", "2016", "32,780")
    calc = table_calculation("What was the change in net sales between 2015 and 2016?", [INCOME], row_names=NAMES)
    assert calc.row == "Revenue" and calc.formula == "85,320 - 93,580"
    # a term inside another word is not said: "cogs" in "cogswheel"
    assert table_value("What was the FY2016 cogswheel output?", [INCOME], row_names=NAMES) is None


def test_a_change_asked_in_percent_is_a_percentage_change_unless_the_row_is_in_percent():
    q = "What is the year-over-year change in revenue from FY2015 to FY2016 (in units of percents)?"
    calc = table_calculation(q, [INCOME])
    assert calc.operation == "percent_change" and calc.formula == "((85,320 - 93,580) / 93,580) * 100"
    assert evaluate(calc.formula).value == pytest.approx(-8.827, abs=1e-3)
    calc = table_calculation("What is the change in the effective tax rate from 2015 to 2016 in percent?", [INCOME])
    assert calc.operation == "change" and calc.formula == "19.5 - 21.0"  # points, not a percentage change
    assert table_calculation("What is the change in revenue from 2015 to 2016?", [INCOME]).operation == "change"


def test_a_row_read_by_another_name_must_hold_that_whole_name():
    """"revenue" read as "net sales" names "Total net sales", not "Net income" (whose "income" is the
    question's "statement of income")."""
    ops = "STATEMENTS OF OPERATIONS\nYear Ended December 31,\n2016 2017\nTotal net sales 135,987 177,866\n" \
          "Net income 2,371 3,033\n"
    q = "What is the change in revenue from FY2016 to FY2017 in percent, using the statement of income?"
    assert table_calculation(q, [ops], row_names={"revenue": ["net sales"]}).row == "Total net sales"
    assert table_calculation(q, [ops.replace("Total net sales 135,987 177,866\n", "")],
                             row_names={"revenue": ["net sales"]}) is None


EARNINGS = """Consolidated Statements of Earnings
$ in millions
Fiscal Years Ended 2017 2016 2015
Revenue 39,403 39,528 40,339
Gross profit 9,440 9,191 9,047
Net earnings 1,228 897 1,233
"""
RATIOS = {"net profit margin": RatioSettings(of=["net income", "net earnings"], per=["revenue", "net sales"]),
          "gross margin": RatioSettings(of=["gross profit", "gross margin"], per=["revenue"]),
          "current ratio": RatioSettings(of=["total current assets"], per=["total current liabilities"], percent=False)}


@pytest.mark.parametrize("question, formula, value", [
    ("What is the FY2015 - FY2017 3 year average net profit margin (as a %)?",
     "(((1,233 / 40,339) + (897 / 39,528) + (1,228 / 39,403)) / 3) * 100", 2.8141),
    ("What was the gross margin in 2016?", "(9,191 / 39,528) * 100", 23.2519),
    ("What was the change in net profit margin from 2016 to 2017?", "(1,228 / 39,403 - 897 / 39,528) * 100", 0.8472),
])
def test_a_ratio_asked_by_name_is_computed_from_its_two_rows(question, formula, value):
    calc = ratio_calculation(question, ["No table here.", EARNINGS], RATIOS)
    assert calc.formula == formula and calc.row in ("Net earnings / Revenue", "Gross profit / Revenue")
    assert evaluate(calc.formula).value == pytest.approx(value, abs=1e-3) and calc.cited == [2]


def test_a_ratios_rows_may_come_from_two_passages_in_the_same_unit():
    """The statement's chunks repeat its units; a table in another unit is not mixed in."""
    top = "Consolidated Balance Sheets\n(in millions)\nAs of December 31, 2019 2018\nTotal current assets 500 400\n"
    bottom = "Consolidated Balance Sheets\n(in millions)\nAs of December 31, 2019 2018\nTotal current liabilities 250 250\n"
    calc = ratio_calculation("What is the current ratio in 2019?", [top, bottom], RATIOS)
    assert calc.formula == "(500 / 250)" and calc.cited == [1, 2] and evaluate(calc.formula).value == 2
    assert ratio_calculation("What is the current ratio in 2019?", [top, bottom.replace("millions", "thousands")],
                             RATIOS) is None


@pytest.mark.parametrize("question", [
    "What was the net profit margin?",  # no year
    "What was the net profit margin in 2016 and 2017?",  # two years, no form for them
    "What was the percentage change in net profit margin from 2016 to 2017?",  # not a ratio's form
    "What was the net profit margin in 2014?",  # no column for the year
    "What is the 2016 net profit margin, defined as net earnings / revenue?",  # defines its own
    "What was the operating margin in 2016?",  # not one of the pack's ratios
])
def test_no_ratio_no_answer(question):
    assert ratio_calculation(question, [EARNINGS], RATIOS) is None


def test_a_statement_row_named_as_the_ratio_is_the_figure_unless_a_percent_is_asked():
    """Cisco's statement has a "Gross margin" row (an amount): "the gross margin in 2016" may ask for it."""
    table = EARNINGS.replace("Gross profit", "Gross margin")
    assert ratio_calculation("What was the gross margin in 2016?", [table], RATIOS) is None
    assert ratio_calculation("What was the gross margin in 2016 (in %)?", [table], RATIOS).formula == "(9,191 / 39,528) * 100"


BALANCE = """CONSOLIDATED BALANCE SHEETS
(in millions)
December 31,
2018 2019
Inventories 1,000 1,200
Accounts payable 3,000 3,400
Property and equipment, net 8,000 10,000
"""
OPERATIONS = """CONSOLIDATED STATEMENTS OF OPERATIONS
(in millions)
Year Ended December 31,
2018 2019
Total net sales 20,000 24,000
Cost of sales 12,000 14,000
"""


@pytest.mark.parametrize("question, formula, value, unitless", [
    # days payable: an average, a cell by its other name (COGS), a change; days are no amount
    ("What is the FY2019 DPO? DPO is defined as: 365 * (average accounts payable between FY2018 and FY2019) / "
     "(FY2019 COGS + change in inventory between FY2018 and FY2019). Round to two decimals.",
     "365 * ((3,000 + 3,400) / 2) / (14,000 + (1,200 - 1,000))", 82.2535, True),
    # a term without a year takes the question's one year; a percent asked of a ratio is shown in percent
    ("What is the FY2019 fixed asset turnover in percent? It is calculated as revenue / average PP&E "
     "between FY2018 and FY2019.", "(24,000 / ((8,000 + 10,000) / 2)) * 100", 266.6667, True),
    # an amount: doubling every line item doubles it, so it keeps the tables' unit
    ("What is the FY2019 gross profit, defined as net sales - cost of sales?", "24,000 - 14,000", 10000, False),
])
def test_a_metric_the_question_defines_is_evaluated_over_its_line_items(question, formula, value, unitless):
    names = {"cogs": ["cost of sales"], "pp&e": ["property and equipment, net"], "revenue": ["net sales"]}
    calc = defined_calculation(question, ["No table.", BALANCE, OPERATIONS], row_names=names)
    assert calc.formula == formula and calc.operation == "defined" and calc.unitless is unitless
    assert evaluate(calc.formula).value == pytest.approx(value, abs=1e-3)
    # every passage a line item was read from is cited
    assert calc.cited == ([3] if formula == "24,000 - 14,000" else [2, 3])


@pytest.mark.parametrize("question", [
    "What is the FY2019 DPO?",  # defines nothing
    "What is the FY2019 turnover, defined as the sales over the assets held?",  # words, not a formula
    "What is the FY2019 ratio, defined as: goodwill / total net sales?",  # a line item no table has
    "What is the ratio, defined as: inventories / cost of sales?",  # no year for the terms, none in the question
    "What is the FY2019 ratio, defined as: change in inventories between FY2017 and FY2019 / cost of sales?",  # no 2017 column
    "What is the FY2019 metric, defined as: inventories * inventories + cost of sales?",  # neither amount nor ratio
])
def test_no_clear_definition_no_defined_answer(question):
    assert defined_calculation(question, [BALANCE, OPERATIONS]) is None


def test_a_defined_metrics_line_items_must_share_a_unit():
    thousands = OPERATIONS.replace("(in millions)", "(in thousands)")
    q = "What is the FY2019 ratio, defined as: inventories / cost of sales?"
    assert defined_calculation(q, [BALANCE, OPERATIONS]).formula == "1,200 / 14,000"
    assert defined_calculation(q, [BALANCE, thousands]) is None


def test_of_two_rows_named_alike_the_one_named_whole_but_for_total_wins():
    """"revenue" read as "net sales" names "Net product sales" and "Total net sales" equally (2 of 3 words);
    the total is what it asks for - "Total" says which line item the row totals, not another one."""
    ops = "STATEMENTS OF OPERATIONS\nYear Ended December 31,\n2016 2017\nNet product sales 94,665 118,573\n" \
          "Total net sales 135,987 177,866\n"
    q = "What is the percentage change in revenue from FY2016 to FY2017?"
    assert table_calculation(q, [ops], row_names={"revenue": ["net sales"]}).row == "Total net sales"


@pytest.mark.parametrize("question, formula, value, cited", [
    # "X as a percentage of Y": X's cell over Y's in the year named, times 100
    ("What was cost of sales as a percentage of total net sales in 2019?", "14,000 / 24,000 * 100", 58.3333, [3]),
    # a proportion is a plain ratio; "the proportion of X over total Y"; rows of two tables in one unit, both cited
    ("What is the proportion of inventories over total net sales in 2018?", "1,000 / 20,000", 0.05, [2, 3]),
    # the part by the pack's other name of a line item ("COGS" is "Cost of sales")
    ("What is the percentage of COGS in total net sales in 2018?", "12,000 / 20,000 * 100", 60.0, [3]),
])
def test_a_line_items_share_of_another_in_one_year(question, formula, value, cited):
    calc = share_calculation(question, ["No table.", BALANCE, OPERATIONS], row_names={"cogs": ["cost of sales"]})
    assert calc.formula == formula and calc.operation == "share" and calc.unitless
    assert evaluate(calc.formula).value == pytest.approx(value, abs=1e-4)
    assert calc.cited == cited


@pytest.mark.parametrize("question", [
    "What was cost of sales as a percentage of total net sales?",  # no year
    "What was cost of sales as a percentage of total net sales in 2018 and 2019?",  # two years: which?
    "What was the change in cost of sales as a percentage of total net sales between 2018 and 2019?",  # a change
    "What was goodwill as a percentage of total net sales in 2019?",  # no such row
    "What was inventories and accounts payable as a percentage of total net sales in 2019?",  # a sum of two rows
    "What is the percentage of cost of sales in net sales in 2019?",  # "in" splits only before a total
])
def test_no_clear_share_no_share_answer(question):
    assert share_calculation(question, [BALANCE, OPERATIONS]) is None


def test_a_shares_rows_must_share_a_unit():
    thousands = OPERATIONS.replace("(in millions)", "(in thousands)")
    question = "What was inventories as a percentage of total net sales in 2019?"
    assert share_calculation(question, [BALANCE, OPERATIONS]) is not None
    assert share_calculation(question, [BALANCE, thousands]) is None
