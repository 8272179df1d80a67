"""Relevance filters: the registry, threshold selection, label-free training pairs, the cosine filter, the
SLM judge, the trained cross-encoder (safetensors, reloaded in a fresh process) and abstention end to end.

Real models throughout (SmolLM2 via llama.cpp, MiniLM); the cross-encoder trains for a few steps on
a six-document fixture index.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import ConfigError, SlmragError
from app.evaluation.calibration import Calibration, ScoredQuestion, auc, choose_gate, choose_threshold, rates
from app.filters import FILTERS, make_filter, register_filter
from app.filters.cosine import CosineFilter
from app.filters.cross_encoder import cross_encoder_dir, normalize
from app.pack_edit import round_down, write_filter_settings
from app.training.cross_encoder import build_training_pairs, pseudo_queries

REPO = Path(__file__).resolve().parent.parent

DOCS = {
    "aspirin.txt": (
        "Aspirin dosing for adults\n\n"
        "Adults may take 300 to 600 mg of aspirin every four to six hours for pain or fever. The maximum daily dose "
        "is 4 grams. Aspirin must not be given to children under 16 years because of the risk of Reye's syndrome. "
        "Patients with a history of stomach ulcers or bleeding disorders should avoid aspirin unless a doctor "
        "advises it. Low-dose aspirin of 75 mg daily is used to prevent heart attacks and strokes in people with "
        "cardiovascular disease. Take the tablets with food or milk to reduce stomach irritation."
    ),
    "sepsis.txt": (
        "Management of sepsis\n\n"
        "Sepsis is a life-threatening organ dysfunction caused by a dysregulated host response to infection. "
        "Broad-spectrum intravenous antibiotics should be started within one hour of recognising septic shock. "
        "Blood cultures are taken before the first antibiotic dose whenever this does not delay treatment. "
        "Adults with hypotension receive 30 ml per kg of crystalloid fluid within the first three hours. "
        "Serum lactate is measured and repeated if the initial value is above 2 mmol per litre. "
        "Noradrenaline is the first-line vasopressor when blood pressure stays low after fluids."
    ),
    "termination.txt": (
        "Termination of the services agreement\n\n"
        "Either party may terminate this Agreement for convenience by giving the other party ninety days prior "
        "written notice. Either party may terminate immediately if the other party commits a material breach and "
        "fails to cure it within thirty days of written notice describing the breach. On termination the Customer "
        "shall pay all fees accrued up to the effective date of termination. Sections on confidentiality, "
        "limitation of liability and governing law survive any termination or expiry of this Agreement."
    ),
    "governing_law.txt": (
        "Governing law and disputes\n\n"
        "This Agreement is governed by and construed in accordance with the laws of the State of New York, without "
        "regard to its conflict of laws rules. Any dispute arising out of this Agreement shall be finally settled by "
        "arbitration in New York City under the rules of the American Arbitration Association. The arbitral tribunal "
        "consists of three arbitrators. Judgment on the award may be entered in any court having jurisdiction. "
        "Each party bears its own costs of the arbitration unless the tribunal decides otherwise."
    ),
    "revenue.txt": (
        "Fiscal 2022 results\n\n"
        "Total revenue for fiscal 2022 was 4.2 billion dollars, an increase of 12 percent over fiscal 2021. "
        "Subscription revenue grew 18 percent to 3.1 billion dollars, driven by cloud storage customers. "
        "Operating margin declined from 36.8 percent to 34.6 percent because of higher marketing expenses. "
        "Net income was 610 million dollars, or 1.45 dollars per diluted share. The company repurchased 900 "
        "million dollars of common stock during the year and ended it with 2.3 billion dollars in cash."
    ),
    "dividend.txt": (
        "Dividend policy\n\n"
        "The board of directors declared a quarterly cash dividend of 0.25 dollars per share, payable in March to "
        "shareholders of record at the end of February. The company has raised its dividend every year for the "
        "past eleven years. Future dividends depend on earnings, capital requirements and the financial condition "
        "of the company. The payout ratio target is between 30 and 40 percent of adjusted net income. Dividends are "
        "paid from retained earnings and are subject to the approval of the board."
    ),
}


@pytest.fixture(scope="module")
def fixture_pack(tmp_path_factory):
    """The medical pack with its index in a temp folder holding the six fixture documents only."""
    from app.packs import load_pack
    from ingest.ingestor import Ingestor

    root = tmp_path_factory.mktemp("filters")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    pack = load_pack("medical", root / "index")
    summary = Ingestor(pack).ingest([corpus])
    assert summary.ok and len(summary.added) == len(DOCS)
    return pack


# ------------------------------------------------------------------------------------- registry
def test_unknown_filter_kind_lists_the_known_ones():
    with pytest.raises(SlmragError, match="Unknown filter 'bm42'. Known: none, cosine, cross_encoder, slm_judge"):
        make_filter("bm42", embedder=None)


def test_a_registered_filter_is_one_settings_accept(monkeypatch):
    from pydantic import ValidationError

    from app.settings import FilterSettings

    with pytest.raises(ValidationError, match="Input should be 'none', 'cosine', 'cross_encoder' or 'slm_judge'"):
        FilterSettings(kind="keyword")

    class KeywordFilter:
        def score(self, question, passages, *, query_vector=None):
            return [float(question.split()[0] in p.text) for p in passages]

    monkeypatch.setattr("app.filters.FILTERS", dict(FILTERS))  # the registration ends with the test
    register_filter("keyword", lambda **_: KeywordFilter())
    assert FilterSettings(kind="keyword").kind == "keyword"
    assert make_filter("keyword", embedder=None).score("dose", _passages("the dose", "a tower")) == [1.0, 0.0]
    with pytest.raises(SlmragError, match="already registered"):
        register_filter("cosine", lambda **_: KeywordFilter())


def test_filters_import_no_torch():
    """Building a pack's settings or the cheap filters must not pay for torch (the cross-encoder loads it
    only when its model loads)."""
    code = ("import sys\n"
            "from app.filters import make_filter\n"
            "import app.filters.cross_encoder, app.filters.slm_judge, app.settings\n"
            "app.settings.PackConfig.model_validate({'name': 'x', 'title': 'x', 'filter': {'kind': 'cross_encoder'},"
            " 'generator': {'backend': 'transformers'}})\n"
            "make_filter('none', embedder=None)\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"


# ------------------------------------------------------------------------------------- cosine
def test_cosine_filter_uses_the_given_question_vector():
    """The ask path embeds the question once; the filter must not embed it again."""
    import numpy as np

    class CountingEmbedder:
        queries = 0

        def encode_query(self, question):
            self.queries += 1
            return np.array([1.0, 0.0])

        def encode(self, texts):
            return np.array([[1.0, 0.0], [0.0, 1.0]])[: len(texts)]

    embedder = CountingEmbedder()
    cosine = CosineFilter(embedder)
    passages = _passages("first", "second")
    assert cosine.score("q", passages, query_vector=np.array([0.0, 1.0])) == [0.0, 1.0]
    assert embedder.queries == 0
    assert cosine.score("q", passages) == [1.0, 0.0]
    assert embedder.queries == 1


# ------------------------------------------------------------------------------------- thresholds
def test_choose_threshold_keeps_95_percent_of_gold():
    gold = [i / 20 for i in range(1, 21)]  # 0.05 .. 1.0
    t = choose_threshold(gold, keep=0.95)
    assert t == pytest.approx(0.10)  # drops exactly one gold score of 20 (5 %)
    kept, _ = rates(gold, [], t)
    assert kept == pytest.approx(0.95)
    assert choose_threshold(gold, keep=1.0) == pytest.approx(0.05)
    assert choose_threshold(gold, keep=0.90) == pytest.approx(0.15)


def test_choose_threshold_small_and_tied_cases():
    assert choose_threshold([0.7]) == 0.7
    assert choose_threshold([0.3, 0.9]) == 0.3  # 1 of 2 would be 50 % < 95 %
    assert choose_threshold([0.4, 0.4, 0.4]) == 0.4  # ties are all kept (score >= threshold)
    assert choose_threshold([0.9, 0.1, 0.5]) == 0.1  # unsorted input
    with pytest.raises(SlmragError, match="No gold passage"):
        choose_threshold([])


def test_choose_gate_gates_at_most_the_allowed_share():
    best = [0.9, 0.2, 0.5, 0.7, 0.4, 0.6, 0.8, 0.3, 0.55, 0.65]  # ten answerable questions' best cosines
    assert choose_gate(best, max_false=0.0) == 0.2  # gates none: the lowest question still passes
    assert choose_gate(best, max_false=0.1) == 0.3  # gates exactly one (0.2)
    assert choose_gate(best, max_false=0.25) == 0.4  # floor(2.5) = 2 gated: 0.2 and 0.3
    with pytest.raises(SlmragError, match="answerable"):
        choose_gate([])


def test_calibration_rates_count_gated_questions_as_abstaining():
    # Two answerable questions (the second's best cosine is under the gate) and one out-of-pack question.
    a = ScoredQuestion({}, [0.9, 0.1], [True, False], best_cosine=0.6)
    b = ScoredQuestion({}, [0.8, 0.7], [True, False], best_cosine=0.3)
    oop = ScoredQuestion({}, [0.95], [False], best_cosine=0.2)
    cal = Calibration("cross_encoder", 0.5, 0.95, [a, b], [oop], gate=0.4)
    row = cal.row(0.5)
    assert row["gold_kept"] == 0.5  # a's gold kept; b's gold lost to the gate
    assert row["nongold_dropped"] == 1.0  # a's 0.1 under the threshold, b's 0.7 gated
    assert row["false_abstention"] == 0.5 and row["oop_abstention"] == 1.0
    assert Calibration("cross_encoder", 0.5, 0.95, [a, b], [oop]).row(0.5) == {
        "threshold": 0.5, "gold_kept": 1.0, "nongold_dropped": 0.5, "false_abstention": 0.0, "oop_abstention": 0.0}


def test_calibration_lets_a_covered_question_past_the_gate():
    # b is under the gate in cosine (.3 < .4) but a candidate holds its words (filter.gate_coverage): it passes,
    # its gold passage counts as kept and it does not abstain; the out-of-pack question is covered by nothing.
    a = ScoredQuestion({}, [0.9, 0.1], [True, False], best_cosine=0.6)
    b = ScoredQuestion({}, [0.8, 0.7], [True, False], best_cosine=0.3, covered=True)
    oop = ScoredQuestion({}, [0.95], [False], best_cosine=0.2)
    row = Calibration("cross_encoder", 0.5, 0.95, [a, b], [oop], gate=0.4).row(0.5)
    assert row["gold_kept"] == 1.0 and row["false_abstention"] == 0.0 and row["oop_abstention"] == 1.0
    assert row["nongold_dropped"] == 0.5  # a's 0.1 dropped; b's 0.7 kept now that b passes


def test_calibration_counts_cosine_kept_passages_as_kept_and_ranks_by_the_model():
    """With filter.cosine_keep, a passage cosine rescues (``rescued``) is kept at every threshold; the AUC
    reported is the model's own ranking, which orders the prompt, and filter_auc ranks the rescued first."""
    a = ScoredQuestion({}, [0.05, 0.1], [True, False], rescued=[True, False])  # gold kept by cosine alone
    b = ScoredQuestion({}, [0.8, 0.02], [True, False], rescued=[False, True])  # other passage kept by cosine
    cal = Calibration("cross_encoder", 0.5, 0.95, [a, b], cosine_keep=0.56)
    assert cal.row(0.5) == {"threshold": 0.5, "gold_kept": 1.0, "nongold_dropped": 0.5, "false_abstention": 0.0}
    # pairs (gold, other): (.05, .1) lost, (.05, .02) won, (.8, .1) won, (.8, .02) won
    assert cal.summary()["auc"] == pytest.approx(0.75) and cal.summary()["cosine_keep"] == 0.56
    # as the filter ranks (rescued +inf): (inf, .1) won, (inf, inf) tie, (.8, .1) won, (.8, inf) lost
    assert cal.summary()["filter_auc"] == pytest.approx(2.5 / 4)
    # the highest gold score keeping every gold passage: .8 (a's gold rescued at any threshold)
    assert cal.threshold_for(1.0) == 0.8 and [r["threshold"] for r in cal.table()] == [0.5, 0.8]


def test_calibration_counts_passages_under_the_cosine_floor_as_dropped():
    """With filter.cosine_floor, a passage under it scores -inf (dropped at every threshold); the AUC is still the
    model's own ranking. Gold .9 and .3 (the other under the floor), others .1 and .8 (under the floor): at .5,
    one gold of two kept, both others dropped."""
    ninf = float("-inf")
    a = ScoredQuestion({}, [0.9, 0.1], [True, False], model_scores=[0.9, 0.1])
    b = ScoredQuestion({}, [ninf, ninf], [True, False], model_scores=[0.3, 0.8])
    cal = Calibration("cross_encoder", 0.5, 0.95, [a, b], cosine_floor=0.33)
    assert cal.row(0.5) == {"threshold": 0.5, "gold_kept": 0.5, "nongold_dropped": 1.0, "false_abstention": 0.5}
    # pairs (gold, other): (.9, .1) won, (.9, .8) won, (.3, .1) won, (.3, .8) lost
    assert cal.summary()["auc"] == pytest.approx(0.75) and cal.summary()["cosine_floor"] == 0.33
    # as the filter ranks them: (.9, .1) and (.9, -inf) won, (-inf, .1) lost, (-inf, -inf) a tie (half)
    assert cal.summary()["filter_auc"] == pytest.approx(2.5 / 4)
    assert cal.threshold_for(0.5) == 0.9 and cal.threshold_for(0.95) == 0.1  # b's gold is never kept: the lowest score
    assert [r["threshold"] for r in cal.table()] == [0.1, 0.5]  # shares 1.0-.7 all need the lowest score; .5 is the chosen one


def test_score_questions_scores_under_the_floor_minus_inf_and_marks_what_keep_keeps():
    """A candidate's score becomes -inf under cosine_floor, else stays the model's; one at or over cosine_keep is
    rescued - kept at any threshold (.5's, beside .6's at .55)."""
    from app.evaluation.calibration import score_questions

    class Fixed:
        def __init__(self, scores):
            self.scores = scores

        def score(self, question, passages, **_):
            return self.scores

    class Retriever:
        def search(self, question, k, doc=None):
            return ["p1", "p2", "p3"]

    out = score_questions(Fixed([0.7, 0.6, 0.5]), Retriever(), [{"question": "q"}], 3, labelled=False,
                          cosine=Fixed([0.2, 0.4, 0.6]), cosine_keep=0.56, cosine_floor=0.3)
    assert out[0].scores == [float("-inf"), 0.6, 0.5] and out[0].model_scores == [0.7, 0.6, 0.5]
    assert out[0].rescued == [False, False, True] and out[0].best_cosine == 0.6
    assert out[0].kept(0.55, None) == [False, True, True] and out[0].kept(0.65, None) == [False, False, True]


def test_read_scores_takes_a_share_of_the_best_log_odds_out_of_every_score():
    """filter.relative_to_best, by hand: the log-odds of .8 is ln 4, of .5 is 0, of .2 is -ln 4. Taking half of
    the best's (ln 2) out of each: sigmoid(ln 2) = 2/3, sigmoid(-ln 2) = 1/3, sigmoid(-ln 8) = 1/9; all of it:
    1/2, sigmoid(-ln 4) = 1/5, sigmoid(-2 ln 4) = 1/17. The order stays; 0 changes nothing."""
    from app.filters import read_scores

    assert read_scores([0.5, 0.8, 0.2], relative_to_best=0.5) == pytest.approx([1 / 3, 2 / 3, 1 / 9])
    assert read_scores([0.5, 0.8, 0.2], relative_to_best=1.0) == pytest.approx([1 / 5, 1 / 2, 1 / 17])
    assert read_scores([0.5, 0.8, 0.2]) == [0.5, 0.8, 0.2]
    assert read_scores([0.3], relative_to_best=1.0) == pytest.approx([0.5])
    assert read_scores([], relative_to_best=0.5) == []
    ends = read_scores([1.0, 0.0], relative_to_best=1.0)  # probabilities of exactly 1 and 0: finite log-odds
    assert ends[0] == pytest.approx(0.5) and 0 <= ends[1] < 1e-9


def test_read_scores_takes_the_rank_prior_off_per_place_down_retrievals_list():
    """filter.rank_prior ln 4, by hand: three candidates at .5 (log-odds 0) in places 0, 1, 2 read 1/2,
    sigmoid(-ln 4) = 1/5, sigmoid(-2 ln 4) = 1/17; given places (a candidate cosine decided sits between) count
    from retrieval's list, not from the scored ones. With relative_to_best 1 too, .8 first and .5 second read 1/2 and
    sigmoid(-ln 4 - ln 4) = 1/17; a later candidate can fall under an earlier one it outscored."""
    from app.filters import read_scores

    prior = math.log(4)
    assert read_scores([0.5, 0.5, 0.5], rank_prior=prior) == pytest.approx([1 / 2, 1 / 5, 1 / 17])
    assert read_scores([0.5, 0.5], [0, 2], rank_prior=prior) == pytest.approx([1 / 2, 1 / 17])
    assert read_scores([0.8, 0.5], relative_to_best=1.0, rank_prior=prior) == pytest.approx([1 / 2, 1 / 17])
    assert read_scores([0.5, 0.8], rank_prior=2 * prior) == pytest.approx([1 / 2, 1 / 5])  # .8 (odds 4) in place 1: odds 4/16
    with pytest.raises(ValueError):
        read_scores([0.5, 0.5], [0], rank_prior=prior)


def test_cosine_decides_keeps_at_the_keep_drops_under_the_floor_and_leaves_the_rest_to_the_model():
    from app.filters import cosine_decides

    assert cosine_decides([0.6, 0.56, 0.4, 0.33, 0.2], 0.56, 0.33) == [True, True, None, None, False]
    assert cosine_decides([0.6, 0.2], None, None) == [None, None]
    assert cosine_decides([0.6, 0.2], None, 0.33) == [None, False]


def test_score_questions_reads_only_the_scores_an_ask_lets_the_model_decide_against_the_best():
    """With relative, calibration reads the scores against the question's best as an ask does: the best among
    the candidates cosine leaves to the model (not under the floor, not over the keep) - .9's rescued candidate
    is not the best they are read against. All of .8's log-odds out: .8 -> 1/2, .5 -> 1/5."""
    from app.evaluation.calibration import score_questions

    class Fixed:
        def __init__(self, scores):
            self.scores = scores

        def score(self, question, passages, **_):
            return list(self.scores)

    class Retriever:
        def search(self, question, k, doc=None):
            return ["p1", "p2", "p3", "p4"]

    out = score_questions(Fixed([0.8, 0.5, 0.2, 0.9]), Retriever(), [{"question": "q"}], 4, labelled=False,
                          cosine=Fixed([0.4, 0.4, 0.2, 0.6]), cosine_keep=0.56, cosine_floor=0.3, relative=1.0)
    assert out[0].scores[:2] == pytest.approx([0.5, 0.2]) and out[0].scores[2] == float("-inf")
    assert out[0].rescued == [False, False, False, True]
    # the model's own ranking (the AUC calibrate prints) reads every candidate alike, against the best of all (.9,
    # log-odds ln 9): .8 -> sigmoid(ln 4 - ln 9) = 4/13, .5 -> 1/10, .2 -> 1/37, .9 -> 1/2
    assert out[0].model_scores == pytest.approx([4 / 13, 1 / 10, 1 / 37, 1 / 2])
    plain = score_questions(Fixed([0.8, 0.5]), Retriever(), [{"question": "q"}], 2, labelled=False)
    assert plain[0].scores == [0.8, 0.5]  # weight 0 (the default): the model's own scores
    # rank_prior ln 4: each candidate's place in retrieval's list, the floored one (place 2) counted: the second .5
    # (place 1) reads 1/5, the fourth (place 3) sigmoid(-3 ln 4) = 1/65
    ranked = score_questions(Fixed([0.5, 0.5, 0.2, 0.5]), Retriever(), [{"question": "q"}], 4, labelled=False,
                             cosine=Fixed([0.4, 0.4, 0.2, 0.4]), cosine_floor=0.3, rank_prior=math.log(4))
    assert ranked[0].scores[:2] == pytest.approx([1 / 2, 1 / 5]) and ranked[0].scores[2] == float("-inf")
    assert ranked[0].scores[3] == pytest.approx(1 / 65)


def test_rates_and_auc_exact():
    kept, dropped = rates([0.8, 0.6, 0.4], [0.1, 0.5, 0.7, 0.2], 0.5)
    assert kept == pytest.approx(2 / 3)
    assert dropped == pytest.approx(2 / 4)  # 0.1 and 0.2 dropped; 0.5 is kept (>=)
    assert auc([0.9, 0.8], [0.1, 0.85]) == pytest.approx(0.75)
    assert auc([0.5], [0.5]) == pytest.approx(0.5)
    assert auc([1.0], [0.0, 0.2]) == 1.0


def test_round_down_never_drops_the_chosen_passage():
    assert round_down(0.123456) == 0.1234
    assert round_down(0.5) == 0.5
    assert round_down(-0.03001) == -0.0301
    assert round_down(0.123456) <= 0.123456


def test_write_filter_settings_keeps_comments_and_other_settings(tmp_path):
    src = (REPO / "domains" / "legal" / "pack.yaml").read_text(encoding="utf-8")
    path = tmp_path / "pack.yaml"
    path.write_text(src.replace("filter:", "filter:  # calibrated", 1), encoding="utf-8")
    import yaml

    before = yaml.safe_load(path.read_text())
    write_filter_settings(path, threshold=0.4321987, kind="cross_encoder")
    after_text = path.read_text()
    after = yaml.safe_load(after_text)
    assert after["filter"]["threshold"] == 0.4321 and after["filter"]["kind"] == "cross_encoder"
    assert "# calibrated" in after_text and after_text.startswith("# slmrag domain pack")
    for key in before:
        if key != "filter":
            assert after[key] == before[key]
    # a pack without a filter block gets one
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\ntitle: Bare\n", encoding="utf-8")
    write_filter_settings(bare, threshold=0.25)
    assert yaml.safe_load(bare.read_text())["filter"] == {"threshold": 0.25}
    # kind none behind a gate (filter calibrate --kind none --gate): the gate and kind are written, no threshold
    write_filter_settings(bare, threshold=None, kind="none", gate=0.567891)
    assert yaml.safe_load(bare.read_text())["filter"] == {"threshold": 0.25, "kind": "none", "gate": 0.5678}
    # a trained filter calibrated with --relative-to-best: the share is written beside the threshold it was chosen with
    write_filter_settings(bare, threshold=0.00661, kind="cross_encoder", relative_to_best=0.75)
    assert yaml.safe_load(bare.read_text())["filter"] == {"threshold": 0.0066, "kind": "cross_encoder", "gate": 0.5678,
                                                          "relative_to_best": 0.75}
    # a value already there as written is left as the user wrote it; a changed one is rewritten, its comment kept
    bare.write_text("name: bare\ntitle: Bare\nfilter:\n  rank_prior: 0.8  # why\n  threshold: 0.5  # chosen\n",
                    encoding="utf-8")
    write_filter_settings(bare, threshold=0.25, rank_prior=0.8)
    assert bare.read_text() == "name: bare\ntitle: Bare\nfilter:\n  rank_prior: 0.8  # why\n  threshold: 0.2500  # chosen\n"


# ------------------------------------------------------------------------------------- pairs
def test_pseudo_queries_are_not_verbatim_in_their_positive():
    import random

    text = DOCS["sepsis.txt"].split("\n\n", 1)[1]
    made = pseudo_queries(text, "Management of sepsis", {}, random.Random(1), max_queries=3)
    assert made
    for query, positive, kind in made:
        assert normalize(query) not in normalize(positive), (kind, query)
        assert len(positive.split()) >= 15
        if kind == "sentence":
            assert normalize(query) in normalize(text)  # it was taken out of the chunk


def test_build_training_pairs_from_the_index(fixture_pack):
    from app.store import IndexStore

    snap = IndexStore(fixture_pack.index_dir).snapshot()
    pairs = build_training_pairs(snap, max_queries=30, seed=0)
    positives = [p for p in pairs if p.label == 1.0]
    negatives = [p for p in pairs if p.label == 0.0]
    assert len(positives) >= 6 and len(negatives) >= len(positives)
    assert {p.kind for p in negatives} & {"bm25", "dense"}  # hard negatives
    for p in positives:
        assert normalize(p.query) not in normalize(p.passage)
    doc_of = {c.vid: c.doc_id for c in snap.chunks}
    for p in negatives:
        assert p.vid != p.query_vid and normalize(p.query) not in normalize(p.passage)
        assert doc_of[p.vid] != doc_of[p.query_vid]  # one chunk per fixture document
    assert pairs == build_training_pairs(snap, max_queries=30, seed=0)  # deterministic


# ------------------------------------------------------------------------------------- SLM judge
OBVIOUS = [
    ("What is the recommended dose of aspirin for adults?",
     "Aspirin: adults may take 300 to 600 mg every four hours, up to 4 g a day. Do not give to children under 16.",
     "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889."),
    ("Which law governs this agreement?",
     "This Agreement shall be governed by and construed in accordance with the laws of the State of New York.",
     "Revenue increased 12% to $4.2 billion driven by higher cloud subscriptions."),
    ("What was the company's revenue in 2022?",
     "Total revenue for fiscal 2022 was $4.2 billion, up 12% from 2021.",
     "Patients with sepsis should receive antibiotics within one hour of recognition."),
]


@pytest.fixture(scope="module")
def generator():
    from app.generators import LlamaCppGenerator
    from app.settings import GeneratorSettings

    return LlamaCppGenerator(GeneratorSettings()).load()


def _passages(*texts):
    from app.retrieval import Passage

    return [Passage(i, "d", "d.txt", "d.txt", None, t, "", 0, len(t)) for i, t in enumerate(texts)]


def test_slm_judge_prefers_the_relevant_passage(generator):
    """On these three obvious pairs the 135M judge ranks right (measured: P(yes) ~0.08-0.12 vs 0.02-0.09;
    it never says "Yes" outright, so only the ratio is usable, and only as a ranking score)."""
    from app.filters.slm_judge import SLMJudgeFilter

    judge = SLMJudgeFilter(generator)
    for question, relevant, unrelated in OBVIOUS:
        scores = judge.score(question, _passages(relevant, unrelated))
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores[0] > scores[1], (question, scores)
        assert judge.score(question, _passages(relevant, unrelated)) == scores  # deterministic


def test_yes_probability_prefix_reuse_matches_a_fresh_context(generator):
    from app.filters.slm_judge import SLMJudgeFilter

    judge = SLMJudgeFilter(generator)
    q, rel, unrel = OBVIOUS[0]
    prompts = [judge.prompt(q, rel), judge.prompt(q, unrel), judge.prompt(OBVIOUS[1][0], rel)]
    reused = generator.yes_probability(prompts)  # consecutive prompts share the template+question prefix
    fresh = []
    for p in prompts:
        generator.llm.reset()
        fresh += generator.yes_probability([p])
    assert reused == pytest.approx(fresh, abs=1e-4)
    # generation still works from the state the judge left behind
    text = "".join(generator.stream([{"role": "user", "content": "Say hello."}], max_tokens=4))
    assert text.strip()


def test_slm_judge_needs_a_logit_backend():
    """A backend without next-token scoring says which backend or filter to use instead."""
    from app.generators import OpenAIGenerator
    from app.settings import GeneratorSettings

    remote = OpenAIGenerator(GeneratorSettings(backend="openai", base_url="http://127.0.0.1:9/v1"))
    # refused when the filter is built (no model is loaded to find out), not at the first question
    with pytest.raises(ConfigError, match=r"'openai' generator backend.*'llamacpp'.*generator\.backend.*filter\.kind"):
        make_filter("slm_judge", embedder=None, generator=remote)
    with pytest.raises(ConfigError, match="needs the pack's generator"):
        make_filter("slm_judge", embedder=None)


# ------------------------------------------------------------------------------------- cross-encoder
def test_cross_encoder_missing_model_says_how_to_train(tmp_path):
    from app.filters.cross_encoder import CrossEncoderFilter

    with pytest.raises(SlmragError, match="slmrag filter train --pack"):
        CrossEncoderFilter.from_index_dir(tmp_path / "legal")


def test_cross_encoder_trains_saves_safetensors_and_reloads(fixture_pack):
    from app.store import IndexStore
    from app.training.cross_encoder import train_cross_encoder

    snap = IndexStore(fixture_pack.index_dir).snapshot()
    out = cross_encoder_dir(fixture_pack.index_dir)
    report = train_cross_encoder(snap, out, max_queries=40, batch_size=16, lr=3e-4, epochs=6, seed=0,
                                 train_max_length=128)
    assert report.steps > 0 and report.pairs > 20
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pkl", ".pickle", ".pt", ".pth"))], files
    assert not out.with_name(out.name + ".tmp").exists()
    # a fresh process loads it offline (local files, no pickle) and ranks an obvious pair right
    code = (
        "import json, sys, app\n"
        "from app.filters.cross_encoder import CrossEncoderFilter\n"
        "f = CrossEncoderFilter.from_index_dir(sys.argv[1])\n"
        "print(json.dumps(f.score_texts('How soon must antibiotics be given in septic shock?', [\n"
        "  'Broad-spectrum intravenous antibiotics should be started within one hour of recognising septic shock.',\n"
        "  'The board declared a quarterly cash dividend of 0.25 dollars per share.'])))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(fixture_pack.index_dir)], capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    scores = json.loads(res.stdout.strip().splitlines()[-1])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[1], scores


# ------------------------------------------------------------------------------------- abstention
def test_out_of_domain_question_abstains_with_nearest_sources(fixture_pack):
    from app.assistant import Assistant, AskOptions

    assistant = Assistant(fixture_pack)
    opts = dict(filter="cosine", threshold=0.35, max_tokens=4)
    ood = assistant.ask("Which planet has the tallest volcano in the solar system?", AskOptions(**opts)).run()
    assert ood.abstained is True
    assert ood.citations == [] and ood.context == []
    assert ood.passages and all(p.kept is False for p in ood.passages)
    assert all(p.filter_score is not None and p.filter_score < 0.35 for p in ood.passages)
    data = ood.to_json()
    assert data["abstained"] is True and data["passages"][0]["kept"] is False
    assert "could not find" in ood.answer.lower()
    assert data["passages"][0]["name"] in ood.answer  # the abstain message names the nearest sources

    inside = assistant.ask("How soon should antibiotics be started in septic shock?", AskOptions(**opts))
    assert inside.abstained is False
    assert inside.context and inside.context[0].name == "sepsis.txt"
    answer = inside.run()
    assert answer.abstained is False and answer.citations


def test_record_dev_figures_keeps_the_training_metadata(tmp_path):
    from app.pack_edit import record_dev_figures

    info = tmp_path / "filter.json"
    info.write_text(json.dumps({"seed": 0, "pairs": 12}))
    record_dev_figures(info, {"auc": 0.87, "gate": 0.33}, "slmrag filter calibrate --pack p --write")
    data = json.loads(info.read_text())
    assert data["seed"] == 0 and data["pairs"] == 12
    assert data["dev"]["auc"] == 0.87 and data["dev"]["gate"] == 0.33
    assert data["dev"]["command"] == "slmrag filter calibrate --pack p --write" and len(data["dev"]["measured"]) == 10


def test_cosine_keep_keeps_a_document_kind_the_trained_model_does_not_know(prebuilt_indexes, tmp_path):
    """The medical pack's relevance model (filter/, shipped beside its cosine filter) was trained on research
    abstracts and scores the starter discharge summary's passages .01-.03. filter.cosine_keep keeps the one
    whose cosine reaches it, and says so; without it the trained model alone keeps nothing."""
    import shutil

    from app.assistant import Assistant, AskOptions
    from app.packs import load_pack

    shutil.copytree(prebuilt_indexes / "medical", tmp_path / "medical")
    pack = load_pack("medical", tmp_path / "medical")
    cfg = pack.config.filter
    cfg.kind, cfg.threshold, cfg.cosine_keep = "cross_encoder", 0.11, 0.56  # stop 29's dev calibration (docs/filter.md)
    assistant = Assistant(pack).load(generator=False)
    q = "When and with whom is the patient's follow-up appointment after discharge?"
    found = assistant.retrieve(q, AskOptions())
    by_cosine = [p for p in found.passages if p.extra.get("kept_by") == "cosine"]
    # kept on its cosine, so the model did not score it (it scores such passages .01-.03: stop 29)
    assert by_cosine and all(p.kept and p.filter_score is None and p.extra["cosine"] >= 0.56 for p in by_cosine)
    assert all(p.filter_score is not None for p in found.passages if p.extra.get("cosine") is None)
    assert [p.name for p in found.kept][: len(by_cosine)] == [p.name for p in sorted(by_cosine, key=lambda p: -p.extra["cosine"])]
    assert by_cosine[0].name.startswith("discharge_summary") and "follow-up" in by_cosine[0].text.lower()
    assert by_cosine[0].to_json()["kept_by"] == "cosine" and found.filter.to_json()["cosine_keep"] == 0.56
    cfg.cosine_keep = None
    assert not any(p.kept for p in assistant.retrieve(q, AskOptions()).passages)


def test_the_packs_relevance_model_is_loaded_once_for_every_index_view(prebuilt_indexes, tmp_path):
    """The pack's own relevance model (filter.model) reads no index: a new index generation (a view) uses the
    same loaded model, so an ingest does not make the next question load it again; cosine, which reads the
    snapshot's vectors, is built per view."""
    import shutil

    from app.assistant import Assistant, IndexView
    from app.packs import load_pack

    shutil.copytree(prebuilt_indexes / "medical", tmp_path / "medical")
    pack = load_pack("medical", tmp_path / "medical")
    assert pack.config.filter.model
    assistant = Assistant(pack).load(generator=False)
    first = assistant.view
    model = first.relevance_filter("cross_encoder", assistant)
    later = IndexView(first.snapshot, first.retriever)  # as refresh() builds one after an ingest
    assert later.relevance_filter("cross_encoder", assistant) is model is assistant.relevance_model
    assert later.relevance_filter("cosine", assistant) is not first.relevance_filter("cosine", assistant)


def test_cosine_floor_drops_what_the_trained_model_keeps_off_the_questions_topic(prebuilt_indexes, tmp_path):
    """The medical pack's relevance model (filter/) at a threshold low enough to keep every candidate of a question
    about the starter hypertension protocol (the pack's own floor and keep set aside); filter.cosine_floor then
    drops those whose cosine is under it, and only those, and the filter report says the floor."""
    import shutil

    from app.assistant import Assistant, AskOptions
    from app.packs import load_pack

    shutil.copytree(prebuilt_indexes / "medical", tmp_path / "medical")
    pack = load_pack("medical", tmp_path / "medical")
    cfg = pack.config.filter
    cfg.kind, cfg.threshold, cfg.cosine_floor, cfg.cosine_keep = "cross_encoder", 0.0, None, None
    assistant = Assistant(pack).load(generator=False)
    q = "What blood pressure range defines stage 1 hypertension in the Riverbend protocol?"
    found = assistant.retrieve(q, AskOptions())
    assert all(p.kept for p in found.passages)
    cosines = assistant.relevance_filter("cosine").score(q, found.passages)
    floor = sorted(cosines)[len(cosines) // 2]  # half of them (or so) under it
    cfg.cosine_floor = floor
    found = assistant.retrieve(q, AskOptions())
    assert [p.kept for p in found.passages] == [c >= floor for c in cosines]
    # under the floor: dropped on its cosine, not scored by the model
    assert [p.filter_score is None for p in found.passages] == [c < floor for c in cosines]
    assert all(p.to_json()["dropped_by"] == "cosine" for p in found.passages if not p.kept)
    assert any(p.kept for p in found.passages) and not all(p.kept for p in found.passages)
    assert found.filter.to_json()["cosine_floor"] == floor


def test_filter_order_cosine_puts_a_trained_filters_kept_passages_in_cosine_order(prebuilt_indexes, tmp_path):
    """filter.order: the medical relevance model (its floor, keep and rank prior set aside) at a threshold that keeps every
    candidate of a question on the starter hypertension protocol: with order 'filter' they reach the prompt by the
    model's score, with 'cosine' by their cosine - the same passages, the model still scoring each - and the
    filter report names the order; the cosine kind ignores it (its own order is cosine)."""
    import shutil

    from app.assistant import Assistant, AskOptions
    from app.packs import load_pack

    shutil.copytree(prebuilt_indexes / "medical", tmp_path / "medical")
    pack = load_pack("medical", tmp_path / "medical")
    cfg = pack.config.filter
    cfg.kind, cfg.threshold, cfg.cosine_floor, cfg.cosine_keep, cfg.order = "cross_encoder", 0.0, None, None, "filter"
    cfg.rank_prior = 0.0  # the model's own scores, which filter_details then need not report
    assistant = Assistant(pack).load(generator=False)
    q = "What blood pressure range defines stage 1 hypertension in the Riverbend protocol?"
    by_model = assistant.retrieve(q, AskOptions(k=8))
    cosine = dict(zip((p.vid for p in by_model.passages),
                      assistant.relevance_filter("cosine").score(q, by_model.passages)))
    assert [p.filter_score for p in by_model.kept] == sorted((p.filter_score for p in by_model.kept), reverse=True)
    cfg.order = "cosine"
    by_cosine = assistant.retrieve(q, AskOptions(k=8))
    assert [cosine[p.vid] for p in by_cosine.kept] == sorted((cosine[p.vid] for p in by_cosine.kept), reverse=True)
    # the same passages kept (the prompt's token budget then takes the first that fit, so its share may differ)
    assert [p.kept for p in by_cosine.passages] == [p.kept for p in by_model.passages]
    assert [p.vid for p in by_cosine.kept] != [p.vid for p in by_model.kept]  # the two rankings differ here
    assert all(p.filter_score is not None and not p.filter_details() for p in by_cosine.passages)
    assert by_cosine.filter.to_json()["order"] == "cosine" and "order" not in by_model.filter.to_json()
    cfg.kind, cfg.threshold = "cosine", 0.0
    assert "order" not in assistant.retrieve(q, AskOptions(k=8)).filter.to_json()


def test_kind_none_with_a_gate_keeps_every_passage_of_a_question_that_passes_it(fixture_pack):
    """filter.kind none + filter.gate: no passage is dropped for its own score (retrieval's order stands), but a
    question none of whose candidates reaches the gate keeps nothing; an ask with --filter none skips the gate."""
    from app.assistant import Assistant, AskOptions

    assistant = Assistant(fixture_pack).load(generator=False)
    inside, outside = "How soon should antibiotics be started in septic shock?", \
        "Which planet has the tallest volcano in the solar system?"
    cfg = assistant.pack.config.filter
    saved = (cfg.kind, cfg.gate)
    try:
        cfg.kind, cfg.gate = "cosine", -1.0  # every candidate passes; gate_score = the best cosine
        best_in = assistant.retrieve(inside, AskOptions(k=4)).gate_score
        best_out = assistant.retrieve(outside, AskOptions(k=4)).gate_score
        assert best_in > best_out + 0.1, (best_in, best_out)
        cfg.kind, cfg.gate = "none", round((best_in + best_out) / 2, 4)
        kept = assistant.retrieve(inside, AskOptions(k=4))
        ungated = assistant.retrieve(inside, AskOptions(k=4, filter="none"))
        assert [p.name for p in kept.kept] == [p.name for p in ungated.kept] == [p.name for p in kept.passages]
        assert len(kept.kept) == 4 and kept.filter_json()["gated"] is False and kept.kept[0].name == "sepsis.txt"
        gated = assistant.retrieve(outside, AskOptions(k=4))
        assert gated.kept == [] and gated.filter_json()["gated"] is True and gated.filter_json()["kind"] == "none"
        told = assistant.ask(outside, AskOptions(k=4)).run()  # the user is told the gate decided, not a threshold
        assert told.abstained and told.reason == "gated" and "close enough to your question" in told.answer
        assert len(assistant.retrieve(outside, AskOptions(k=4, filter="none")).kept) == 4  # --filter none: no gate
    finally:
        cfg.kind, cfg.gate = saved


def test_a_question_whose_words_a_candidate_holds_passes_the_gate(fixture_pack):
    """filter.gate_coverage: under a gate no question reaches in cosine (0.99), "How soon should antibiotics be
    started in septic shock?" still passes - sepsis.txt holds 4 of its 5 content words (antibio, start, septic,
    shock; not soon): .8 >= .75 - and keeps every candidate; the planet question holds none and stays gated; at
    a floor of .85, or with no gate_coverage, the sepsis question is gated too."""
    from app.assistant import Assistant, AskOptions

    assistant = Assistant(fixture_pack).load(generator=False)
    inside, outside = "How soon should antibiotics be started in septic shock?", \
        "Which planet has the tallest volcano in the solar system?"
    cfg = assistant.pack.config.filter
    saved = (cfg.kind, cfg.gate, cfg.gate_coverage)
    try:
        cfg.kind, cfg.gate, cfg.gate_coverage = "none", 0.99, 0.75
        passed = assistant.retrieve(inside, AskOptions(k=4))
        assert passed.gate_score < 0.99 and passed.coverage_score == 0.8 and not passed.gated
        assert len(passed.kept) == 4 and passed.filter_json()["gated"] is False
        assert passed.filter_json()["gate_coverage"] == 0.75 and passed.filter_json()["coverage_score"] == 0.8
        turned = assistant.retrieve(outside, AskOptions(k=4))
        assert turned.gated and turned.kept == [] and turned.filter_json()["coverage_score"] == 0.0
        cfg.gate_coverage = 0.85
        assert assistant.retrieve(inside, AskOptions(k=4)).kept == []
        cfg.gate_coverage = None
        plain = assistant.retrieve(inside, AskOptions(k=4))
        assert plain.gated and plain.coverage_score is None and "coverage_score" not in plain.filter_json()
    finally:
        cfg.kind, cfg.gate, cfg.gate_coverage = saved


def test_calibrate_kind_none_chooses_only_the_gate(fixture_pack):
    """`filter calibrate --kind none --gate F`: the gate from the answerable questions' best cosine (F = 0: the lowest
    of them), every passage of a question that passes kept; without --gate there is nothing to calibrate."""
    from app.assistant import Assistant
    from app.errors import SlmragError
    from app.evaluation.calibration import calibrate

    qs = [{"id": "s", "question": "How soon should antibiotics be started in septic shock?", "answer": "one hour",
           "evidence": "Broad-spectrum intravenous antibiotics should be started within one hour", "doc": "sepsis.txt"},
          {"id": "g", "question": "Which rules govern arbitration of disputes under the agreement?", "answer": "AAA",
           "evidence": "under the rules of the American Arbitration Association", "doc": "governing_law.txt"}]
    assistant = Assistant(fixture_pack)
    with pytest.raises(SlmragError, match="--gate"):
        calibrate(assistant, qs, kind="none", k=3)
    cal = calibrate(assistant, qs, kind="none", k=3, gate_max_false=0.0)
    assert cal.gate == min(q.best_cosine for q in cal.questions)
    row = cal.row(cal.threshold)
    assert row["gold_kept"] == 1.0 and row["nongold_dropped"] == 0.0 and row["false_abstention"] == 0.0


def test_calibrate_reads_out_of_pack_questions_that_carry_only_a_question(fixture_pack, tmp_path):
    """`filter calibrate --out-of-pack FILE`: another domain's questions have no answer, evidence or document here,
    so a line needs only its "question" (it asked for all five fields and refused such a file); the abstention on
    them is reported."""
    import json

    from typer.testing import CliRunner

    from app.cli import app

    qs = tmp_path / "dev.jsonl"
    qs.write_text(json.dumps({"id": "s", "question": "How soon should antibiotics be started in septic shock?",
                              "answer": "one hour", "doc": "sepsis.txt",
                              "evidence": "Broad-spectrum intravenous antibiotics should be started within one hour"}) + "\n")
    oop = tmp_path / "oop.jsonl"
    oop.write_text(json.dumps({"question": "Which planet has the tallest volcano in the solar system?"}) + "\n")
    result = CliRunner().invoke(app, ["filter", "calibrate", "--pack", "medical", "--index-dir", str(fixture_pack.index_dir),
                                      "--questions", str(qs), "--out-of-pack", str(oop), "--kind", "cosine", "--k", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["answerable"] == 1 and "oop_abstention" in report


def test_filter_read_tokens_is_how_much_of_each_pair_the_relevance_model_reads(tmp_path):
    """filter.read_tokens: the pack's relevance model reads that many tokens of each (question, passage) pair.
    Two passages that differ only after their first 24 words score the same when it reads 32 tokens and
    differently at the default (256), where it reads them whole."""
    from app.assistant import Assistant
    from app.packs import load_pack
    from app.pair_model import READ_LENGTH
    from app.settings import FilterSettings

    assert FilterSettings().read_tokens == READ_LENGTH  # the default is the length the model was trained to read
    q = "Which drug is first-line treatment for stage 1 hypertension?"
    opening = "This clinic handbook covers intake, scheduling and referral procedures for adult outpatients. " * 2
    texts = [opening + "Thiazide diuretics are first-line drugs for stage 1 hypertension.",
             opening + "Parking permits are renewed at the front desk every January."]
    scores = {}
    for read in (32, READ_LENGTH):
        pack = load_pack("medical", tmp_path / "medical")
        pack.config.filter.read_tokens = read
        scores[read] = Assistant(pack).relevance_model.score_texts(q, texts)
    assert scores[32][0] == pytest.approx(scores[32][1], abs=1e-6)
    assert scores[READ_LENGTH][0] > scores[READ_LENGTH][1] + 0.05, scores


def test_filter_relative_to_best_reads_each_passage_against_the_questions_best(prebuilt_indexes, tmp_path):
    """filter.relative_to_best with the medical relevance model (its floor and keep set aside) on the starter
    protocol: each candidate's filter score is relative_to_best of the model's own scores (reported as
    model_score), the best stays the best, the threshold reads the new scores, and the filter report names the
    share; a cosine filter ignores it."""
    import shutil

    from app.assistant import Assistant, AskOptions
    from app.filters import read_scores
    from app.packs import load_pack

    shutil.copytree(prebuilt_indexes / "medical", tmp_path / "medical")
    pack = load_pack("medical", tmp_path / "medical")
    cfg = pack.config.filter
    cfg.kind, cfg.cosine_floor, cfg.cosine_keep, cfg.order = "cross_encoder", None, None, "filter"
    cfg.relative_to_best, cfg.rank_prior, cfg.threshold = 0.0, 0.0, 0.0
    assistant = Assistant(pack).load(generator=False)
    q = "What blood pressure range defines stage 1 hypertension in the Riverbend protocol?"
    own = assistant.retrieve(q, AskOptions(k=8))
    model = [p.filter_score for p in own.passages]
    assert "relative_to_best" not in own.filter.to_json() and not any(p.filter_details() for p in own.passages)
    cfg.relative_to_best = 0.75
    relative = assistant.retrieve(q, AskOptions(k=8))
    scores = [p.filter_score for p in relative.passages]
    assert scores == pytest.approx(read_scores(model, relative_to_best=0.75), abs=1e-6)
    assert scores != pytest.approx(model)
    assert [p.filter_details()["model_score"] for p in relative.passages] == pytest.approx(model, abs=1e-5)
    assert scores.index(max(scores)) == model.index(max(model))
    assert relative.filter.to_json()["relative_to_best"] == 0.75
    cfg.threshold = sorted(scores)[len(scores) // 2]  # the median new score: the upper half is kept
    kept = assistant.retrieve(q, AskOptions(k=8))
    assert [p.kept for p in kept.passages] == [s >= cfg.threshold for s in scores]
    # filter.rank_prior too: each candidate's place in retrieval's list takes its share off
    cfg.rank_prior, cfg.threshold = 0.8, 0.0
    ranked = assistant.retrieve(q, AskOptions(k=8))
    assert [p.filter_score for p in ranked.passages] == pytest.approx(
        read_scores(model, relative_to_best=0.75, rank_prior=0.8), abs=1e-6)
    assert [p.filter_details()["model_score"] for p in ranked.passages] == pytest.approx(model, abs=1e-5)
    assert ranked.filter.to_json()["rank_prior"] == 0.8
    cfg.kind = "cosine"  # a kind without probabilities ignores the share (eval's cosine variant switches so)
    assert not {"relative_to_best", "rank_prior"} & set(assistant.filter_choice().to_json())


def test_calibrate_relative_to_best_chooses_the_threshold_given_the_share_and_writes_both(prebuilt_indexes, tmp_path):
    """`filter calibrate --relative-to-best S --rank-prior P --write` on a copy of the medical pack (its relevance model, the
    starter protocol): the threshold is chosen on the scores read against each question's best, and both are
    stored; the pack then switched to cosine keeps the share, which cosine ignores (eval's cosine and no-filter
    variants switch a pack so); asking cosine for a share is refused."""
    import json
    import shutil

    import yaml
    from typer.testing import CliRunner

    from app.cli import app
    from app.packs import load_pack

    shutil.copytree(load_pack("medical").path, tmp_path / "pack", ignore=shutil.ignore_patterns("corpus"))
    shutil.copytree(prebuilt_indexes / "medical", tmp_path / "index")
    qs = tmp_path / "dev.jsonl"
    qs.write_text(json.dumps({"id": "h", "question": "When should medication be started for stage 1 hypertension?",
                              "answer": "10-year cardiovascular risk is 10% or higher",
                              "evidence": "start medication if the 10-year cardiovascular risk is 10% or higher",
                              "doc": "hypertension_guideline.md"}) + "\n")
    args = ["filter", "calibrate", "--pack", str(tmp_path / "pack"), "--index-dir", str(tmp_path / "index"),
            "--questions", str(qs), "--k", "5", "--write", "--json"]
    result = CliRunner().invoke(app, args + ["--kind", "cross_encoder", "--relative-to-best", "0.5", "--rank-prior", "0.8"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    written = yaml.safe_load((tmp_path / "pack" / "pack.yaml").read_text())["filter"]
    assert report["relative_to_best"] == 0.5 and written["relative_to_best"] == 0.5
    assert report["rank_prior"] == 0.8 and written["rank_prior"] == 0.8
    assert report["gold_kept"] == 1.0 and written["threshold"] == report["threshold"]
    result = CliRunner().invoke(app, args + ["--kind", "cosine"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    written = yaml.safe_load((tmp_path / "pack" / "pack.yaml").read_text())["filter"]
    assert written["kind"] == "cosine" and written["relative_to_best"] == 0.5 and "relative_to_best" not in report
    from app.assistant import Assistant

    assert "relative_to_best" not in Assistant(load_pack(tmp_path / "pack")).filter_choice().to_json()
    result = CliRunner().invoke(app, args + ["--kind", "cosine", "--relative-to-best", "0.5"])
    assert result.exit_code != 0 and "--relative-to-best" in result.output
    result = CliRunner().invoke(app, args + ["--kind", "cosine", "--rank-prior", "0.8"])
    assert result.exit_code != 0 and "--rank-prior" in result.output
