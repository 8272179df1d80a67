"""Each retrieval feature on a small fixture corpus, with the real MiniLM, bm25s and FAISS.

Every test runs the same question with the feature on and off: on, the right passage leads; off, it
does not. The "off" half proves the fixture really exercises the feature (a test that passes either way
would prove nothing).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from app.assistant import Assistant
from ingest.ingestor import Ingestor


def build(pack, files: dict[str, str], tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for name, text in files.items():
        (docs / name).write_text(textwrap.dedent(text))
    summary = Ingestor(pack).ingest([docs])
    assert summary.failed == []
    return Assistant(pack).load(generator=False)


def top(assistant, question: str, k: int = 5, **settings):
    for key, value in settings.items():
        setattr(assistant.pack.config.retrieval, key, value)
    return assistant.retriever.search(question, k)


# ---------------------------------------------------------------------------------------------- finance
FILING = """\
    # {company} annual report {year}

    ## Results of operations
    Revenue for the year was {revenue} million, driven by subscriptions and services.
    Operating expenses were kept under control across all regions.

    ## Employees
    At year end the company had {staff} employees in four countries.
    """


@pytest.fixture()
def filings(tmp_pack, tmp_path):
    pack = tmp_pack("finance")
    files = {
        # The 2018 filing repeats "revenue" (BM25 and the embedder both favour it on text alone).
        "NORTHWIND_2018_10K.md": FILING.format(company="Northwind", year=2018, revenue="812", staff="1,100")
        + "\n## Revenue by segment\nRevenue from subscriptions was most of revenue.\n",
        "NORTHWIND_2019_10K.md": FILING.format(company="Northwind", year=2019, revenue="947", staff="1,240"),
        # Best Buy's text never names the company and says "associates", not "employees".
        "BESTBUY_2019_10K.md": "# Form 10-K\n\n## Human capital\nThe Company had 125,000 associates at the "
        "end of the fiscal year.\n",
    }
    return build(pack, files, tmp_path)


def test_year_in_question_favours_that_years_filing(filings):
    q = "What was Northwind's revenue in FY2019?"
    off = top(filings, q, doc_first=False, metadata_boost=0.0)
    assert off[0].name == "NORTHWIND_2018_10K.md"  # text alone picks the wrong year
    on = top(filings, q, doc_first=False, metadata_boost=1.0)
    assert on[0].name == "NORTHWIND_2019_10K.md"
    assert "947" in on[0].text


def test_company_written_with_spaces_matches_a_joined_file_name(filings):
    # The file says BESTBUY, the question "Best Buy"; its text only says "The Company".
    q = "How many employees did Best Buy have?"
    off = top(filings, q, doc_first=False, metadata_boost=0.0)
    assert off[0].name != "BESTBUY_2019_10K.md"
    on = top(filings, q, doc_first=False, metadata_boost=1.0)
    assert on[0].name == "BESTBUY_2019_10K.md" and "125,000" in on[0].text


# ---------------------------------------------------------------------------------------------- legal
FILLER = ("Each party shall perform its obligations in a professional manner, keep proper records, "
          "cooperate in good faith and give the other party reasonable information on request. ")


def contract(title: str, parties: str, clauses: list[str]) -> str:
    """A contract long enough that each numbered clause is its own chunk."""
    body = "\n\n".join(f"{i}. {c} {FILLER * 4}" for i, c in enumerate(clauses, start=1))
    return f"{title}\n\nThis {title.title()} is made between {parties}.\n\n{body}\n"


CONTRACT_A = contract("SUPPLY AGREEMENT", 'Harbor Lane Foods Inc. ("Buyer") and Orchard Valley Growers LLC ("Supplier")',
                      ["Products. Supplier shall deliver fresh apples and pears in the quantities ordered.",
                       "Price. Prices are fixed for each season and invoiced monthly.",
                       "Disputes. Oregon courts apply Oregon statutes to this Agreement.",
                       "Term. This Agreement runs for three growing seasons."])
# Distractors: other contracts whose governing-law clauses use the question's own words.
DISTRACTORS = {
    f"{a.lower()}_{b.lower()}_supply.txt": contract(
        "SUPPLY AGREEMENT", f"{a} Lane Foods Inc. and {b} Valley Growers LLC",
        ["Territory. The distributor sells the products in its territory.",
         f"Governing law. The state law that governs this agreement is the law of {law}; the agreement is "
         f"governed by and construed under the laws of {law}.",
         "Term. Two years."])
    for a, b, law in [("Nimbus", "Coastline", "Ireland"), ("Vesper", "Harlow", "Delaware"),
                      ("Quartz", "Milford", "New York"), ("Alder", "Penrose", "Texas"),
                      ("Cobalt", "Linden", "Ontario")]}


@pytest.fixture()
def contracts(tmp_pack, tmp_path):
    pack = tmp_pack("legal")
    return build(pack, {"harbor_lane_orchard_valley_supply.txt": CONTRACT_A, **DISTRACTORS}, tmp_path)


def test_document_first_search_finds_the_clause_in_the_named_contract(contracts):
    q = ("In the Supply Agreement between Harbor Lane Foods Inc. and Orchard Valley Growers LLC, "
         "which state law governs the agreement?")
    off = top(contracts, q, k=3, doc_first=False, bm25_weight=1.0)
    assert not any("Oregon" in p.text for p in off), [(p.name, p.text[:80]) for p in off]  # same-title contracts crowd it out
    on = top(contracts, q, k=3, doc_first=True, doc_margin=1.2, bm25_weight=1.0)
    assert any(p.name == "harbor_lane_orchard_valley_supply.txt" and "Oregon" in p.text for p in on)
    assert all(p.extra.get("routed") is True for p in on)
    # each passage carries its document's opening (the parties), which the Oregon clause does not repeat
    oregon = next(p for p in on if "Oregon" in p.text)
    assert "Harbor Lane" not in oregon.text and oregon.opening.startswith("SUPPLY AGREEMENT")
    assert "Orchard Valley Growers" in oregon.opening


def test_document_first_search_does_not_route_without_a_clear_lead(contracts):
    # Nothing in the question names a contract: no document leads by the margin, so nothing is routed.
    q = "How long does the agreement last?"
    on = top(contracts, q, doc_first=True, doc_margin=1.2)
    assert contracts.retriever.route(q, contracts.retriever.bm25_scores(q)) is None
    assert not any(p.extra.get("routed") for p in on)


# ---------------------------------------------------------------------------------------------- hybrid
def test_bm25_finds_a_rare_code_that_dense_search_misses(tmp_pack, tmp_path):
    pack = tmp_pack("medical")
    files = {f"batch{i}.txt": f"Batch QX-77{i}{i + 1} passed its release tests.\n"
             for i in range(8)}
    files["recall.txt"] = "Batch QX-7731 was withdrawn. Return the affected packs to the pharmacy.\n"
    assistant = build(pack, files, tmp_path)
    q = "What happened to batch QX-7731?"
    assert top(assistant, q, k=1, mode="bm25")[0].name == "recall.txt"
    dense = top(assistant, q, k=3, mode="dense")
    assert dense[0].name != "recall.txt"  # why hybrid: the embedding has no idea what QX-7731 is


def test_contextual_header_finds_a_chunk_by_its_document_title(tmp_pack, tmp_path):
    pack = tmp_pack("medical")
    body = "The dose is one tablet twice a day, with food, for seven days.\n"
    # The warfarin dosing chunk never says "warfarin" (nor "dose"): only its document title does.
    files = {"a.md": "# Warfarin patient guide\n\n" + "Background on blood clots and why they form.\n" * 30
             + "\n## Dosing\n\nTake one tablet twice a day, with food, for seven days.\n"}
    for drug in ("Amoxicillin", "Ibuprofen", "Metformin", "Omeprazole", "Sertraline"):
        files[f"{drug.lower()}.md"] = f"# {drug} patient guide\n\n## Dosing\n\n" + body
    q = "warfarin dose"
    pack.config.chunking.contextual_header = False
    off = build(pack, files, tmp_path)
    off_top = top(off, q, k=1, mode="dense")[0]
    assert not (off_top.name == "a.md" and "tablet" in off_top.text)
    # Same corpus, headers on: the dosing chunk of the warfarin guide carries its title in its vector.
    pack2 = tmp_pack("medical").with_index_dir(tmp_path / "indexes" / "with-header")
    on_top = top(build(pack2, files, tmp_path), q, k=1, mode="dense")[0]
    assert on_top.name == "a.md" and "tablet" in on_top.text


# ---------------------------------------------------------------------------------------------- expansions
def test_pack_expansions_lead_a_ratio_question_to_the_statement_lines(tmp_pack, tmp_path):
    """'Operating margin' is never written on the income statement that holds its inputs; the finance
    pack's expansions.yaml adds "operating income total revenue" to the search query."""
    pack = tmp_pack("finance")
    assert "operating margin" in pack.expansions
    files = {
        "ACME_2023_10K.md": "# Acme 2023 annual report\n\n## Strategy\nWe aim to expand margins and improve our "
                            "operating profile through pricing, sourcing and automation programmes.\n\n"
                            "## Consolidated statements of operations\n| line | 2023 | 2022 |\n|---|---|---|\n"
                            "| Total revenue | 5,210 | 4,870 |\n| Operating income | 912 | 801 |\n| Net income | 640 | 598 |\n",
    }
    assistant = build(pack, files, tmp_path)
    q = "What was Acme's operating margin profile in FY2023?"
    assert "operating income" in assistant.retriever.expand(q)
    on = top(assistant, q, k=1)
    assert "Operating income" in on[0].text
    patterns = assistant.retriever._expansion_patterns
    assistant.retriever._expansion_patterns = []  # the same pack without its expansions
    try:
        assert assistant.retriever.expand(q) == q
        off = top(assistant, q, k=1)
        assert "Operating income" not in off[0].text
    finally:
        assistant.retriever._expansion_patterns = patterns


def test_expansions_match_whole_phrases_only(tmp_pack, tmp_path):
    from app.retrieval import Retriever

    r = Retriever.__new__(Retriever)
    Retriever.__init__(r, type("S", (), {"chunks": [], "documents": {}})(), None, tmp_pack("finance").config.retrieval,
                       {"ebit": "operating income", "quick ratio": "current assets current liabilities"})
    assert r.expand("What is the EBITDA?") == "What is the EBITDA?"  # 'ebit' is not a word of it
    assert r.expand("Quick  ratio in 2022?").endswith("current assets current liabilities")


def test_table_row_named_by_the_question_leads(tmp_pack, tmp_path):
    pack = tmp_pack("finance")
    prose = ("The service cost of our pension plans rose in 2019, and the service cost outlook for 2020 "
             "depends on discount rates; service cost is discussed with interest cost below. ") * 3
    rows = "\n".join(f"| {label} | {a} | {b} |" for label, a, b in [
        ("Interest cost", "4,120", "3,980"), ("Expected return on plan assets", "(5,300)", "(5,010)"),
        ("Amortization of net loss", "1,210", "1,405"), ("Service cost", "5,809", "3,055"),
        ("Net periodic pension cost", "5,839", "3,430")])
    files = {"pension.md": f"# Pension note\n\n## Discussion\n{prose}\n\n## Components of net periodic pension cost\n"
                           f"| component | 2019 | 2018 |\n|---|---|---|\n{rows}\n"}
    assistant = build(pack, files, tmp_path)
    q = "What was the service cost in 2019?"
    on = top(assistant, q, k=1, table_row_boost=1.0)
    assert "| Service cost | 5,809 |" in on[0].text
    off = top(assistant, q, k=1, table_row_boost=0.0)
    assert "| Service cost |" not in off[0].text  # the prose repeats the question's words


def test_words_naming_the_routed_document_leave_its_keyword_query():
    from app.retrieval import _without_names

    q = "What were Best Buy's total inventories in FY2019?"
    assert _without_names(q, ["bestbuy"]) == "What were total inventories in FY2019"
    assert _without_names("Does MetLife's remarketing agent get a fee?", ["metlife", "remarketing"]) == "Does agent get a fee"
    # a run must spell the whole name word; short runs never do
    assert _without_names("Is the best price to buy fixed?", ["bestbuy"]) == "Is the best price to buy fixed"
    assert _without_names("Is AB fixed?", ["ab"]) == "Is fixed"


def test_within_the_routed_filing_its_name_words_do_not_pick_the_chunk(tmp_pack, tmp_path):
    """The question names Brightway (BRIGHTWAY_2019_10K routes); the filing repeats "Brightway" in its store
    tables, and its balance sheet never says it. Ranked with the name in the keyword query, a store table
    leads; without it, the balance sheet does (keyword ranking alone: the change is to its query)."""
    pack = tmp_pack("finance")
    stores = "\n\n".join(f"## Brightway {kind}\n" + " ".join(
        f"Brightway {kind} total in region {i}: Brightway {kind} stores {n + i}, openings {i}, closings {i + 1}."
        for i in range(12)) for kind, n in [("Mobile", 300), ("Outlet", 120), ("Express", 80), ("Canada", 60)])
    files = {"BRIGHTWAY_2019_10K.md": f"# Form 10-K\n\n{stores}\n\n## Consolidated balance sheets\n"
             "Merchandise inventories 5,409; receivables 1,015; prepaid expenses 466.\n",
             # other filings' many chunks make "Brightway" a rare, weighty keyword corpus-wide
             "OTHERCO_2019_10K.md": "# Form 10-K\n\n" + "\n\n".join(
                 f"## Section {i}\n" + "Receivables, leases and pensions were reviewed by the committee. " * 30
                 for i in range(20))}
    a = build(pack, files, tmp_path)
    q = "What were Brightway's total inventories?"
    a.pack.config.retrieval.doc_first = True
    r = a.retriever
    bm25 = r.bm25_scores(r.expand(q))
    routed = r.route(q, bm25)
    assert routed is not None and a.view.snapshot.documents[routed].name == "BRIGHTWAY_2019_10K.md"
    with_names, _, _ = r._fuse(q, None, bm25, 2, routed)
    chunks, positions = a.view.snapshot.chunks, a.view.snapshot.vid_to_pos
    assert "5,409" not in chunks[positions[with_names[0][0]]].text  # the name words pick a store table
    on = r.search(q, 2, mode="bm25")  # the same keyword ranking, the name words left out inside the filing
    assert "5,409" in on[0].text and on[0].extra.get("routed")


# ---------------------------------------------------------------------------------------------- same table
def statement(company: str, rows: int) -> str:
    """An income statement as a PDF's text gives it, long enough for the finance chunker to split it; every
    part opens with the statement's title, units and periods."""
    items = [f"{name} {1000 + 37 * i:,} {1100 + 41 * i:,}" for i, name in enumerate(
        ["Total net sales", "Cost of sales"] + [f"{company} operating expense line {w}" for w in
                                                 "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
                                                 "november oscar papa quebec romeo sierra tango".split()[:rows]]
        + ["Income before income taxes", "Net income"])]
    return "\n".join([f"CONSOLIDATED STATEMENTS OF OPERATIONS OF {company.upper()}", "(in millions)",
                      "Year Ended December 31,", "2018 2019", *items, "", f"{company} sells widgets worldwide."])


@pytest.fixture()
def statements(tmp_pack, tmp_path):
    pack = tmp_pack("finance")
    # Two companies' statements: the other's parts are not this one's, even where their rows read alike.
    return build(pack, {"NORTHWIND_2019_10K.txt": statement("Northwind", 20),
                        "FABRIKAM_2019_10K.txt": statement("Northwind", 20).replace("Net income", "Net earnings")},
                 tmp_path)


def test_the_rest_of_a_split_statement_is_found_by_its_title(statements):
    hits = top(statements, "What was Northwind's net income in 2019?", k=10, doc_first=True)
    lower = next(p for p in hits if p.name == "NORTHWIND_2019_10K.txt" and "Net income" in p.text
                 and "Total net sales" not in p.text)
    parts = statements.retriever.same_table([lower])
    assert parts, "the statement must be split over chunks for this test"
    assert all(p.doc_id == lower.doc_id and p.text.splitlines()[0] == lower.text.splitlines()[0] for p in parts)
    assert any("Total net sales" in p.text for p in parts)  # the upper half, which the question did not retrieve
    assert lower.vid not in {p.vid for p in parts}
    # the same title in another document is another table
    assert not any(p.name == "FABRIKAM_2019_10K.txt" for p in parts)
    # a passage that opens with a fragment, not a title, has no table to complete
    lower.text = "2019\n" + lower.text
    assert statements.retriever.same_table([lower]) == []
