"""Domain behaviour of chunking and redaction, measured with the real MiniLM tokenizer.

* finance: a table split across chunks repeats its caption (units) and header row (periods) in every
  chunk, rows stay whole, and a row label stays with the rows it names;
* legal: a clause heading always travels with its text (no chunk ends with a heading line alone);
* medical: identifiers are redacted in the *stored* chunk text when ``ingest.redact_pii`` is on, and
  left alone when it is off; plus exact tests of each redaction pattern.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.embedder import Embedder
from app.settings import ChunkingSettings, EmbedderSettings
from ingest.chunking import Chunker, _is_heading_line
from ingest.redact import redact


@pytest.fixture(scope="module")
def count_tokens():
    return Embedder(EmbedderSettings()).count_tokens


def chunker(count_tokens, strategy: str, size: int, overlap: int = 8) -> Chunker:
    return Chunker(ChunkingSettings(strategy=strategy, chunk_tokens=size, overlap_tokens=overlap), count_tokens)


# ---------------------------------------------------------------------------------------------- finance
MD_HEADER = "| (in millions of USD) | FY2023 | FY2022 | Change |"
MD_SEPARATOR = "|---|---|---|---|"
MD_ROWS = [f"| Segment {name} revenue | {100 + i}.{i} | {90 + i}.{i} | +{i}.5% |"
           for i, name in enumerate(["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel",
                                     "India", "Juliet", "Kilo", "Lima", "Mike", "November", "Oscar", "Papa",
                                     "Quebec", "Romeo"])]
MD_DOC = "\n".join([
    "# Northwind annual report FY2023",
    "",
    "Revenue grew in every segment during the year, led by Alpha and Bravo.",
    "",
    "## Revenue by segment",
    "",
    MD_HEADER,
    MD_SEPARATOR,
    *MD_ROWS,
    "",
    "Segment revenue excludes intersegment sales.",
])


def test_finance_markdown_table_repeats_header_and_caption_in_every_chunk(count_tokens):
    chunks = chunker(count_tokens, "finance", 120).split(MD_DOC)
    table_chunks = [c for c in chunks if any(row in c.text for row in MD_ROWS)]
    assert len(table_chunks) >= 3, "the table must be long enough to be split"
    for c in table_chunks:
        lines = c.text.splitlines()
        # The column header (the periods FY2023 / FY2022) and the separator come before the rows, and the
        # caption naming the table travels along.
        assert MD_HEADER in lines and MD_SEPARATOR in lines, c.text
        assert lines.index(MD_HEADER) < min(lines.index(r) for r in MD_ROWS if r in lines)
        assert "## Revenue by segment" in lines, c.text
        assert count_tokens(c.text) <= 120
    # Every row is kept whole (its figures never leave their label) and appears in some chunk.
    for row in MD_ROWS:
        assert any(row in c.text.splitlines() for c in table_chunks), row
    # The caption is not left behind as a chunk of its own or at the end of the prose chunk.
    for c in chunks:
        assert c.text.splitlines()[-1].strip() != "## Revenue by segment"


def test_finance_plain_text_table_keeps_periods_units_and_row_labels(count_tokens):
    # The layout pypdf gives for a financial statement: no blank lines, aligned columns, a units line,
    # a period row with no label, and sub-tables introduced by a label row.
    rows = [f"{label:<38}{a:>10}{b:>12}{c:>12}" for label, a, b, c in [
        ("Net sales", "948,300", "901,750", "812,400"), ("Cost of sales", "671,900", "646,200", "589,100"),
        ("Gross profit", "276,400", "255,550", "223,300"), ("Selling, general and administrative", "142,600", "133,900", "121,800"),
        ("Research and development", "28,400", "26,100", "24,300"), ("Operating income", "105,400", "95,550", "77,200"),
        ("Interest expense, net", "12,700", "14,300", "15,800"), ("Income before income taxes", "92,700", "81,250", "61,400"),
        ("Provision for income taxes", "20,400", "17,900", "13,500"), ("Net income", "72,300", "63,350", "47,900"),
    ]]
    eps = [f"{'Basic':<38}{'2.52':>10}{'2.18':>12}{'1.63':>12}", f"{'Diluted':<38}{'2.50':>10}{'2.16':>12}{'1.62':>12}"]
    periods = f"{'':<38}{'2023':>10}{'2022':>12}{'2021':>12}"
    text = "\n".join(["PART II - ITEM 8. FINANCIAL STATEMENTS", "CONSOLIDATED STATEMENTS OF OPERATIONS",
                      "(in thousands of USD, except per-share amounts)", periods, *rows, "Earnings per share", *eps,
                      "Weighted-average shares are presented in thousands."])
    chunks = chunker(count_tokens, "finance", 100).split(text, page=2)
    table_chunks = [c for c in chunks if any(r in c.text for r in rows + eps)]
    assert len(table_chunks) >= 2
    for c in table_chunks:
        lines = [line.strip() for line in c.text.splitlines()]
        assert periods.strip() in lines, c.text  # every figure keeps its year
        assert "(in thousands of USD, except per-share amounts)" in lines, c.text  # ... and its unit
        assert c.page == 2
    for r in rows + eps:
        assert any(r in c.text.splitlines() for c in table_chunks), r
    # The EPS rows are read together with the label that says what they are.
    eps_chunk = next(c for c in table_chunks if eps[1] in c.text)
    assert "Earnings per share" in eps_chunk.text
    assert not any(c.text.splitlines()[-1].strip() == "Earnings per share" for c in chunks)


def test_finance_single_spaced_statement_from_a_pdf_keeps_its_periods_in_every_chunk(count_tokens):
    # What PDFium gives for a balance sheet: single spaces, one date part per line, label lines between
    # the periods and the rows, a units line without brackets.
    items = ["Cash and cash equivalents", "Short-term investments", "Receivables, net", "Merchandise inventories",
             "Other current assets", "Total current assets", "Property and equipment, net", "Goodwill",
             "Operating lease assets", "Other long-term assets", "Total assets"]
    assets = [f"{label} $ {1000 + 37 * i:,} $ {900 + 41 * i:,}" for i, label in enumerate(items)]
    debts = [f"{label} {200 + 13 * i:,} {190 + 11 * i:,}" for i, label in enumerate(
        ["Accounts payable", "Accrued salaries and benefits", "Deferred revenue", "Current portion of long-term debt",
         "Total current liabilities", "Long-term debt", "Total liabilities"])]
    header = ["Consolidated Balance Sheets", "$ in millions, except per share amounts", "August 29,", "2021",
              "August 30,", "2020"]
    text = "\n".join(["Table of Contents", *header, "ASSETS", "CURRENT ASSETS", *assets, "LIABILITIES AND EQUITY",
                      "Current liabilities:", *debts, "See the accompanying notes, which were revised on 12 14.",
                      "Our revenue grew in 2021 and 2020."])
    chunks = chunker(count_tokens, "finance", 90).split(text, page=38)
    table_chunks = [c for c in chunks if any(r in c.text for r in assets + debts)]
    assert len(table_chunks) >= 3, "the statement must be long enough to be split"
    for c in table_chunks:
        lines = c.text.splitlines()
        assert lines[:len(header)] == header, c.text  # title, units and every period line, before the rows
        assert "Table of Contents" not in lines  # a running header is not the table's caption
    for r in assets + debts:
        assert sum(r in c.text.splitlines() for c in table_chunks) == 1, r  # every row once, whole
    # The label lines stay with the rows they introduce; prose after the table is not a row.
    assert any("Current liabilities:" in c.text and debts[0] in c.text for c in table_chunks)
    assert not any("Our revenue grew" in c.text for c in table_chunks)


def test_finance_behaviour_is_what_makes_the_difference(count_tokens):
    # Control: the generic strategy does split this table without its header, so the tests above
    # really exercise the finance strategy.
    chunks = chunker(count_tokens, "sections", 64).split(MD_DOC)
    table_chunks = [c for c in chunks if any(row in c.text for row in MD_ROWS)]
    assert any(MD_HEADER not in c.text for c in table_chunks)


# ---------------------------------------------------------------------------------------------- legal
CONTRACT = """MASTER SERVICES AGREEMENT

This Master Services Agreement is entered into by Halvorsen Data Systems and Blue Heron Logistics.

1. DEFINITIONS
1.1 "Services" means the managed data services described in each Statement of Work, including hosting, monitoring and support.
1.2 "Deliverables" means the reports, configurations and documents the Provider gives the Customer under a Statement of Work.

2. FEES AND PAYMENT
2.1 The Customer shall pay the fees stated in each Statement of Work within thirty (30) days of the invoice date.
2.2 Late payments bear interest at one percent (1%) per month or the highest rate the law allows, whichever is lower.

3. TERM AND TERMINATION
3.1 This Agreement starts on the Effective Date and continues for three (3) years unless terminated earlier.
3.2 Either party may terminate this Agreement for convenience on sixty (60) days' written notice to the other party.
3.3 Either party may terminate this Agreement at once if the other party materially breaches it and fails to cure within thirty (30) days.

Section 4 Confidentiality
Each party shall keep the other party's Confidential Information secret and use it only to perform this Agreement.

ARTICLE V - GOVERNING LAW
This Agreement is governed by the laws of the State of Washington, and the courts of King County have exclusive jurisdiction.
"""

HEADINGS = ["MASTER SERVICES AGREEMENT", "1. DEFINITIONS", "2. FEES AND PAYMENT", "3. TERM AND TERMINATION",
            "Section 4 Confidentiality", "ARTICLE V - GOVERNING LAW"]


@pytest.mark.parametrize("size", [40, 56, 72, 96])
def test_legal_heading_stays_with_its_clause(count_tokens, size):
    chunks = chunker(count_tokens, "legal", size).split(CONTRACT)
    assert len(chunks) >= 3
    for c in chunks:
        last = c.text.strip().splitlines()[-1].strip()
        assert last not in HEADINGS, f"chunk ends with a heading alone:\n{c.text}"
        assert count_tokens(c.text) <= size
    for heading in HEADINGS:
        # The chunk that holds the heading also holds the first line of text under it.
        following = CONTRACT.split(heading + "\n", 1)[1].strip().splitlines()[0]
        holders = [c for c in chunks if heading in c.text.splitlines()]
        assert holders, heading
        for c in holders:
            lines = c.text.splitlines()
            at = lines.index(heading)
            assert at + 1 < len(lines) and following.startswith(lines[at + 1][:40]), (heading, c.text)
    # Every clause keeps its number with its words (the heading field names the clause or its section).
    clause = next(c for c in chunks if "sixty (60) days' written notice" in c.text)
    assert "3.2 Either party may terminate" in clause.text
    assert clause.heading


def test_legal_clause_heading_on_the_real_contract(count_tokens):
    repo = Path(__file__).resolve().parent.parent
    text = (repo / "domains/legal/corpus/master_services_agreement.md").read_text(encoding="utf-8")
    for size in (80, 200):
        for c in chunker(count_tokens, "legal", size, overlap=20).split(text):
            last = c.text.strip().splitlines()[-1]
            assert not _is_heading_line(last), f"chunk ends with heading {last!r}"


# ---------------------------------------------------------------------------------------------- redaction
@pytest.mark.parametrize("text, expected", [
    ("MRN: 00481923", "MRN: [MRN]"),
    ("Medical record number 12-345-678 on file", "Medical record number [MRN] on file"),
    ("Record no. 7788 1234", "Record no. [MRN]"),
    ("DOB: 14/03/1961", "DOB: [DOB]"),
    ("Date of birth: 3 March 1961", "Date of birth: [DOB]"),
    ("born on March 3, 1961", "born on [DOB]"),
    ("Phone: +1 (555) 013-2044", "Phone: [PHONE]"),
    ("call 020 7946 0958 today", "call [PHONE] today"),
    ("E-mail: j.verbeek@example.org.", "E-mail: [EMAIL]."),
    ("Patient: Johanna Verbeek", "Patient: [NAME]"),
    ("Name: Johanna Verbeek", "Name: [NAME]"),
    ("Next of kin: Pieter Verbeek (husband)", "Next of kin: [NAME] (husband)"),
    ("Patient: John Q. Smith was seen", "Patient: [NAME] was seen"),
    ("seen by Dr. Amara Okafor today", "seen by Dr. [NAME] today"),
    ("Ms. Verbeek, a 63-year-old", "Ms. [NAME], a 63-year-old"),
])
def test_redaction_patterns(text, expected):
    out, n = redact(text)
    assert out == expected
    assert n == 1


@pytest.mark.parametrize("text", [
    "Blood pressure 130/80 mmHg; stage 1 is systolic 130-139 mmHg or diastolic 80-89 mmHg.",
    "Target INR 2.5 to 3.5 (target 3.0) for a mechanical mitral valve.",
    "Give 30 mL/kg of crystalloid within 3 hours; metformin 1,000 mg twice daily.",
    "Follow-up on 13/09/2024 at 10:30 in clinic 5B.",
    "HbA1c 7.8% on 03/09/2024; creatinine 1.6 mg/dL.",
])
def test_redaction_leaves_clinical_content_alone(text):
    assert redact(text) == (text, 0)


RECORD = """DISCHARGE SUMMARY
Patient: Johanna Verbeek
MRN: 00481923
DOB: 14/03/1961
Phone: +1 (555) 013-2044
E-mail: j.verbeek@example.org
Diagnosis: community-acquired pneumonia treated with ceftriaxone 2 g daily; blood pressure 138/84 mmHg.
"""
PII = ["Johanna", "Verbeek", "00481923", "14/03/1961", "013-2044", "j.verbeek@example.org"]


@pytest.fixture(scope="module")
def medical_embedder():
    from app.packs import load_pack

    return Embedder(load_pack("medical").config.embedder).load()


@pytest.mark.parametrize("redact_on", [True, False])
def test_medical_redaction_in_stored_chunks(tmp_path, medical_embedder, redact_on):
    from app.packs import load_pack
    from app.store import IndexStore
    from ingest.ingestor import Ingestor

    doc = tmp_path / "discharge.txt"
    doc.write_text(RECORD, encoding="utf-8")
    pack = load_pack("medical", tmp_path / "index")
    assert pack.config.ingest.redact_pii is True  # the shipped medical pack redacts
    pack.config.ingest.redact_pii = redact_on
    summary = Ingestor(pack, embedder=medical_embedder).ingest([doc])
    assert summary.ok and summary.added
    stored = "\n".join(c.text for c in IndexStore(pack.index_dir).snapshot().chunks)
    assert "ceftriaxone 2 g daily" in stored and "138/84 mmHg" in stored  # clinical content survives
    for value in PII:
        assert (value in stored) is (not redact_on), value
    for label in ["[NAME]", "[MRN]", "[DOB]", "[PHONE]", "[EMAIL]"]:
        assert (label in stored) is redact_on, label
    if redact_on:
        # Whole values are replaced, labels kept: nothing of the name or the next line's label is eaten.
        for line in ["Patient: [NAME]", "MRN: [MRN]", "DOB: [DOB]", "Phone: [PHONE]", "E-mail: [EMAIL]"]:
            assert re.search(rf"(?m)^{re.escape(line)}$", stored), (line, stored)
