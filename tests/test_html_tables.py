"""HTML tables become markdown tables at ingest (ingest/html_tables.py), so a figure keeps its row and year.

The layout cases are small enough to check by hand. The last test is end to end with real parts: an
EDGAR-style HTML statement is ingested into the finance pack (packaged MiniLM, a real FAISS index), and a
"change between two years" question is answered from its table row with the right cells.
"""

from __future__ import annotations

import pytest

from ingest.html_tables import Cell, layout
from ingest.loaders import html_to_text

# As filings write it: the years span "$ | figure | )" and a spacer; a title spans all the years.
FILING = """<html><head><title>Acme Corp 10-K</title></head><body>
<h2>Consolidated Statements of Operations</h2><p>(In millions)</p>
<table>
<tr><td></td><td colspan="7">Year Ended December 31,</td></tr>
<tr><td></td><td colspan="3"><b>2019</b></td><td></td><td colspan="3"><b>2018</b></td></tr>
<tr><td>Net sales</td><td>$</td><td>260,174</td><td></td><td></td><td>$</td><td>265,595</td><td></td></tr>
<tr><td>Cost of sales</td><td></td><td>161,782</td><td></td><td></td><td></td><td>163,756</td><td></td></tr>
<tr><td>Other income (expense), net</td><td></td><td>(1,807</td><td>)</td><td></td><td></td><td>2,005</td><td></td></tr>
<tr><td>Gross margin</td><td></td><td>37.8</td><td>%</td><td></td><td></td><td>38.3</td><td>%</td></tr>
</table>
<p>Net sales fell 2 percent as lower unit volumes offset price increases.</p>
</body></html>"""


def test_a_filing_table_keeps_each_figure_under_its_year():
    text, title = html_to_text(FILING)
    assert title == "Acme Corp 10-K"
    assert text.splitlines()[4:12] == [
        "Year Ended December 31,",  # the title over both years: a caption line, not a column
        "| | 2019 | 2018 |",
        "| --- | --- | --- |",
        "| Net sales | $ 260,174 | $ 265,595 |",
        "| Cost of sales | 161,782 | 163,756 |",
        "| Other income (expense), net | (1,807) | 2,005 |",
        "| Gross margin | 37.8% | 38.3% |",
        "",
    ]
    assert text.endswith("Net sales fell 2 percent as lower unit volumes offset price increases.")


def test_a_table_without_figures_keeps_every_row():
    # no figure row, so no header rows to join: the first data row must not merge into the header
    rows = [[Cell(0, 0, "Name"), Cell(1, 1, "Role")], [Cell(0, 0, "Ann"), Cell(1, 1, "CFO")],
            [Cell(0, 0, "Bob"), Cell(1, 1, "CEO")]]
    assert layout(rows) == ["| Name | Role |", "| --- | --- |", "| Ann | CFO |", "| Bob | CEO |"]


def test_header_rows_above_the_figures_become_the_one_header_row():
    rows = [[Cell(0, 0, ""), Cell(1, 1, "Fiscal"), Cell(2, 2, "Fiscal")],
            [Cell(0, 0, "(in $000)"), Cell(1, 1, "2019"), Cell(2, 2, "2018")],
            [Cell(0, 0, "Revenue"), Cell(1, 1, "10"), Cell(2, 2, "9")]]
    assert layout(rows) == ["| (in $000) | Fiscal 2019 | Fiscal 2018 |", "| --- | --- | --- |", "| Revenue | 10 | 9 |"]


def test_every_chunk_of_a_long_html_table_keeps_the_years():
    from app.embedder import Embedder
    from app.settings import ChunkingSettings, EmbedderSettings
    from ingest.chunking import Chunker

    body = "".join(f"<tr><td>Line item {i}</td><td>$</td><td>{1000 + i}</td><td></td><td>$</td><td>{900 + i}</td></tr>"
                   for i in range(60))
    markup = (f"<table><tr><td></td><td colspan='5'>Year Ended June 30,</td></tr><tr><td></td><td colspan='2'>2019</td>"
              f"<td></td><td colspan='2'>2018</td></tr>{body}</table>")
    text, _ = html_to_text(markup)
    chunks = Chunker(ChunkingSettings(strategy="finance", chunk_tokens=120, overlap_tokens=8),
                     Embedder(EmbedderSettings()).count_tokens).split(text)
    rows = [c for c in chunks if "Line item" in c.text]
    assert len(rows) >= 4, "the table must be long enough to be split"
    assert all("| | 2019 | 2018 |" in c.text for c in rows), [c.text[:80] for c in rows]
    assert sum(c.text.count("| Line item") for c in rows) >= 60  # every row is in some chunk


def test_a_plain_table_comes_out_cell_for_cell():
    rows = [[Cell(0, 0, "Name"), Cell(1, 1, "Role")], [Cell(0, 0, " Ann  Lee "), Cell(1, 1, "CFO | Treasurer")]]
    assert layout(rows) == ["| Name | Role |", "| --- | --- |", "| Ann Lee | CFO / Treasurer |"]


def test_fragments_join_the_figure_they_belong_to():
    row = [Cell(0, 0, "Loss"), Cell(1, 1, "$("), Cell(2, 2, "12.5"), Cell(3, 3, ")"), Cell(4, 4, "")]
    assert layout([row]) == ["| Loss | $(12.5) |", "| --- | --- |"]
    assert layout([[Cell(0, 0, " ")], []]) == []


@pytest.mark.parametrize("markup, expected", [
    # block tags inside a cell stay inside it
    ("<table><tr><td>CFO<br>since 2019</td><td><p>a</p><p>b</p></td></tr></table>", "| CFO since 2019 | a b |"),
    # a table in a cell becomes that cell's running text; a table never closed keeps its rows
    ("<table><tr><td>x</td><td><table><tr><td>in</td><td>1</td></tr><tr><td>out</td></tr></table></td></tr>",
     "| x | in 1; out |"),
    # text between cells (malformed) is kept as a cell of its own
    ("<table><tr><td>a</td>stray<td>b</td></tr></table>", "| a | stray | b |"),
])
def test_odd_markup_loses_no_text(markup, expected):
    text, _ = html_to_text(markup)
    assert text.splitlines()[0] == expected


@pytest.mark.slow
def test_a_change_question_over_an_ingested_html_filing_is_read_off_its_table(tmp_path):
    from app.assistant import AskOptions, Assistant
    from app.packs import load_pack
    from ingest.ingestor import Ingestor

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "acme_10k_2019.html").write_text(FILING, encoding="utf-8")
    pack = load_pack("finance", tmp_path / "index")
    assistant = Assistant(pack)
    summary = Ingestor(pack, embedder=assistant.embedder).ingest([corpus])
    assert summary.failed == [] and len(summary.added) == 1
    ans = assistant.load().ask("What was the change in net sales between 2018 and 2019?",
                               AskOptions(max_tokens=40)).run()
    calc = ans.details.get("calculation") or {}
    assert ans.shape == "calculate" and not ans.abstained, ans.to_json()
    assert calc.get("by") == "table" and calc.get("formula") == "260,174 - 265,595", calc
    assert calc["value"] == pytest.approx(-5421) and ans.grounded is True
