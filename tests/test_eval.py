"""`slmrag eval`: hand-checkable aggregation, question loading, and one small end-to-end run on real models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.errors import InputError
from app.evaluation.metrics import is_refusal
from app.evaluation.questions import load_questions
from app.evaluation.report import aggregate, comparison, groups, ratio, recall_curve
from app.evaluation.runner import ranking, select_questions


# ---------------------------------------------------------------------------------------------- pure parts
def test_recall_curve_of_known_rankings():
    hits = [[False, True, False], [True, False, False], [False, False, False]]
    assert recall_curve(hits, 3) == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    # A question with no passages at all is a miss at every k, not skipped.
    assert recall_curve([[True], []], 2) == pytest.approx([0.5, 0.5])
    assert recall_curve([], 2) == [None, None]


def test_ranking_of_one_list():
    r = ranking([False, False, True, True])
    assert r["first_hit"] == 3
    assert r["recall"] == {"1": 0.0, "5": 1.0, "10": 1.0}
    assert r["rr"] == pytest.approx(1 / 3)
    assert ranking([])["first_hit"] is None and ranking([])["rr"] == 0.0


def test_ratio_guards_missing_and_zero():
    assert ratio(0.8, 0.4) == pytest.approx(2.0)
    assert ratio(None, 0.4) is None and ratio(0.8, None) is None and ratio(0.8, 0) is None


def _run(hits, kept, **extra):
    passages = [{"hit": h, "kept": k, "filter_score": 0.5} for h, k in zip(hits, kept)]
    f = {"gold_kept": sum(h and k for h, k in zip(hits, kept)),
         "gold_dropped": sum(h and not k for h, k in zip(hits, kept)),
         "nongold_kept": sum((not h) and k for h, k in zip(hits, kept)),
         "nongold_dropped": sum((not h) and not k for h, k in zip(hits, kept))}
    return {"hits": hits, "kept_hits": [h for h, k in zip(hits, kept) if k], "filter": f, "passages": passages, **extra}


def test_aggregate_by_hand():
    # q1: gold at rank 2, the filter drops rank 1 (non-gold) -> after the filter the gold is rank 1.
    # q2: gold at rank 1, dropped by the filter. q3: no gold retrieved; everything kept.
    records = [
        {"id": "q1", "slmrag": _run([False, True, False], [False, True, True], gold_in_context=True,
                                    score={"kind": "label", "correct": True, "f1": 0.0, "em": False},
                                    abstained=False, abstained_filter=False,
                                    timings={"retrieve_s": 0.1, "filter_s": 0.01, "total_s": 1.0, "tokens_per_s": 50.0,
                                             "tokens": 11})},
        {"id": "q2", "slmrag": _run([True, False], [False, False], gold_in_context=False,
                                    score={"kind": "label", "correct": False, "f1": 0.0, "em": False},
                                    abstained=True, abstained_filter=True,
                                    timings={"retrieve_s": 0.3, "filter_s": 0.03, "total_s": 3.0, "tokens_per_s": None})},
        {"id": "q3", "slmrag": _run([False, False], [True, True], gold_in_context=False,
                                    score={"kind": "text", "correct": True, "f1": 0.6, "em": False},
                                    abstained=False, abstained_filter=False,
                                    timings={"retrieve_s": 0.2, "filter_s": 0.02, "total_s": 2.0, "tokens_per_s": 70.0,
                                             "tokens": 71})},
    ]
    a = aggregate(records, "slmrag", max_k=3)
    assert a["retrieval"]["recall@1"] == pytest.approx(1 / 3)  # only q2
    assert a["retrieval"]["recall@5"] == pytest.approx(2 / 3)
    assert a["retrieval"]["mrr"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert a["after_filter"]["recall@1"] == pytest.approx(1 / 3)  # only q1
    assert a["after_filter"]["mrr"] == pytest.approx(1 / 3)
    assert a["filter"]["gold_kept"] == 1 and a["filter"]["gold_dropped"] == 1
    assert a["filter"]["gold_kept_rate"] == pytest.approx(0.5)
    # non-gold: q1 has 2 (1 dropped), q2 has 1 (dropped), q3 has 2 (kept) -> 2 of 5 dropped
    assert a["filter"]["nongold_dropped_rate"] == pytest.approx(2 / 5)
    assert a["filter"]["questions_gold_kept"] == pytest.approx(0.5)  # q1 yes, q2 no (q3 had no gold)
    assert a["gold_in_context"] == pytest.approx(1 / 3)
    assert a["answers"]["accuracy"] == pytest.approx(2 / 3)
    assert a["answers"]["label_accuracy"] == pytest.approx(0.5)
    assert a["answers"]["text_accuracy"] == 1.0 and a["answers"]["token_f1"] == pytest.approx(0.6)
    assert a["answers"]["abstention_rate"] == pytest.approx(1 / 3)
    assert a["latency"]["retrieve_s"]["p50"] == pytest.approx(0.2)
    assert a["latency"]["total_s"]["p95"] == pytest.approx(2.9)  # numpy-style interpolation: 2 + 0.9 * 1
    assert a["tokens_per_s"]["mean"] == pytest.approx(60.0)
    # pooled: 10 tokens in 0.2 s and 70 in 1.0 s -> 80 tokens / 1.2 s, nearer the long answer's rate than the mean
    assert a["tokens_per_s"]["pooled"] == pytest.approx(66.67)


def test_aggregate_counts_errors_as_misses():
    records = [{"id": "a", "naive": {"hits": [True], "before_filter": {}, "gold_in_context": True}},
               {"id": "b", "naive": {"error": "ValueError: boom"}}]
    a = aggregate(records, "naive", max_k=1)
    assert a["errors"] == 1 and a["retrieval"]["recall@1"] == pytest.approx(0.5)
    assert "after_filter" not in a  # the naive baseline has no filter


def test_groups_and_comparison_rows():
    recs = [{"id": "a", "source": "x", "doc_scoped": True}, {"id": "b", "source": "y"}]
    g = groups(recs)
    assert set(g) == {"all", "corpus-wide", "doc-scoped", "source:x", "source:y"}
    agg = {"slmrag": {"retrieval": {"recall@5": 0.9}}, "naive": {"retrieval": {"recall@5": 0.6}}}
    rows = {r["metric"]: r for r in comparison(agg, {})}
    assert rows["recall@5 (retrieved, before filter)"]["ratio"] == pytest.approx(1.5)
    assert "MRR after filter" not in rows  # neither side has it


def test_is_refusal():
    assert is_refusal("I could not find this in your documents.")
    assert is_refusal("I don't know.")
    assert is_refusal("")
    assert not is_refusal("Yes, slowing the infusion reduces akathisia [1].")
    # A verdict first, a remark about missing information later: an answer, not a refusal.
    assert is_refusal("No. No information is provided about costs.") is False


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_questions_names_the_bad_line(tmp_path):
    good = {"id": "a", "question": "q?", "answer": "x", "evidence": "e", "doc": "d.txt"}
    p = _write_jsonl(tmp_path / "q.jsonl", [good, {**good, "id": "b", "doc": ""}])
    with pytest.raises(InputError, match=r"q.jsonl:2: .*doc"):
        load_questions(p)
    p = _write_jsonl(tmp_path / "dup.jsonl", [good, good])
    with pytest.raises(InputError, match="duplicate id"):
        load_questions(p)


def test_limit_takes_sources_round_robin():
    qs = [{"id": f"a{i}", "source": "a"} for i in range(5)] + [{"id": f"b{i}", "source": "b"} for i in range(2)]
    assert [q["id"] for q in select_questions(qs, 3)] == ["a0", "a1", "b0"]
    assert [q["id"] for q in select_questions(qs, 6)] == ["a0", "a1", "a2", "a3", "b0", "b1"]
    assert len(select_questions(qs, None)) == 7


# ---------------------------------------------------------------------------------------------- end to end
DOCS = {
    "pumps.txt": "Maintenance schedule for the plant.\n\nThe Zephyrine coolant pump must be inspected every "
                 "47 days by two certified technicians. Lubrication of the bearings uses grade 7 grease.\n",
    "canteen.txt": "The staff canteen serves breakfast from seven to nine. Vegetarian lasagne is offered on "
                   "Wednesdays. Coffee is free for night-shift workers.\n",
    "parking.txt": "Visitors park in the north lot. Bicycle racks stand next to the east entrance and are "
                   "covered. Electric vehicle chargers are in bay 12 of the south garage.\n",
    "study.txt": "OBJECTIVE: to test whether daily walking lowers resting heart rate.\nRESULTS: resting heart "
                 "rate fell by 6 beats per minute after twelve weeks of daily walking.\nCONCLUSIONS: Daily "
                 "walking lowers the resting heart rate of sedentary adults.\n",
}
QUESTIONS = [
    {"id": "fx-1", "source": "fixture", "question": "How often must the Zephyrine coolant pump be inspected?",
     "answer": "every 47 days", "doc": "pumps.txt",
     "evidence": "The Zephyrine coolant pump must be inspected every 47 days by two certified technicians."},
    {"id": "fx-2", "source": "fixture", "question": "Where are the electric vehicle chargers?",
     "answer": "bay 12 of the south garage", "doc": "parking.txt",
     "evidence": "Electric vehicle chargers are in bay 12 of the south garage."},
    {"id": "fx-3", "source": "pubmedqa", "question": "Does daily walking lower resting heart rate?",
     "answer": "yes", "doc": "study.txt",
     "evidence": "Daily walking lowers the resting heart rate of sedentary adults."},
    {"id": "fx-4", "source": "fixture", "question": "What does this document say is served on Wednesdays?",
     "answer": "vegetarian lasagne", "doc": "canteen.txt", "doc_scoped": True,
     "evidence": "Vegetarian lasagne is offered on Wednesdays."},
]


@pytest.mark.slow
def _fixture_files(tmp_path):
    """The fixture corpus and question file written under ``tmp_path``; returns (corpus, questions, out)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text)
    return corpus, _write_jsonl(tmp_path / "questions.jsonl", QUESTIONS), tmp_path / "out"


def test_eval_end_to_end_on_a_fixture_corpus(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import app

    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(tmp_path / "indexes"))
    # On a machine shared by several test runs, two inference threads per process thrash (measured:
    # llama.cpp 2.7 tok/s with 2 threads vs 20 tok/s with 1 at load 8 on 2 cores). Speed is not what this
    # test checks, so use one thread unless the caller chose otherwise.
    if "SLMRAG_THREADS" not in os.environ:
        monkeypatch.setenv("SLMRAG_THREADS", "1")
    corpus, questions, out = _fixture_files(tmp_path)

    # The medical pack's prompts and models, with its filter pinned to the cosine filter, so that tuning the
    # real pack (a trained cross-encoder, another threshold) cannot change what this test checks.
    import shutil

    import yaml

    from app.packs import builtin_packs_dir

    pack_dir = tmp_path / "pack"
    shutil.copytree(builtin_packs_dir() / "medical", pack_dir, ignore=shutil.ignore_patterns("corpus"))
    (pack_dir / "corpus").mkdir()
    cfg = yaml.safe_load((pack_dir / "pack.yaml").read_text())
    cfg["filter"] = {"kind": "cosine", "threshold": 0.2}
    (pack_dir / "pack.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    result = CliRunner().invoke(app, ["eval", "--pack", str(pack_dir), "--questions", str(questions), "--corpus",
                                      str(corpus), "--out", str(out), "--max-tokens", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("report.json", "report.md", "recall_at_k.png", "filter_scores.png", "latency.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (tmp_path / "indexes" / "medical").exists()  # the pack's own index was never touched

    report = json.loads((out / "report.json").read_text())
    recs = {r["id"]: r for r in report["records"]}
    assert set(recs) == {q["id"] for q in QUESTIONS}
    # Each question's evidence is a distinctive sentence of a tiny document: slmrag ranks it first.
    for r in recs.values():
        assert r["slmrag"]["before_filter"]["first_hit"] == 1, r["id"]
        assert r["naive"]["before_filter"]["first_hit"] == 1, r["id"]
        assert r["slmrag"]["timings"]["total_s"] >= r["slmrag"]["timings"]["first_token_s"] > 0
        assert isinstance(r["slmrag"]["answer"], str) and isinstance(r["naive"]["answer"], str)
        assert r["slmrag"]["score"]["kind"] in ("label", "text")
        if r["slmrag"]["abstained"]:  # an abstention's text names sources, not an answer: never correct
            assert r["slmrag"]["score"]["correct"] is False and r["slmrag"]["score"]["f1"] == 0.0, r["id"]
    # The doc-scoped question only sees its own document (each fixture file is one chunk).
    assert {p["name"] for p in recs["fx-4"]["slmrag"]["passages"]} == {"canteen.txt"}
    assert {p["name"] for p in recs["fx-4"]["naive"]["passages"]} == {"canteen.txt"}
    all_ = report["aggregates"]["all"]
    assert all_["slmrag"]["retrieval"]["recall@1"] == 1.0 and all_["naive"]["retrieval"]["recall@1"] == 1.0
    assert all_["slmrag"]["retrieval"]["curve"] == [1.0] * 10
    assert {"corpus-wide", "doc-scoped"} <= set(report["aggregates"])
    ingest = report["meta"]["ingest"]
    assert ingest["slmrag"]["documents"] == 4 and ingest["slmrag"]["chunks"] >= 4
    assert ingest["naive"]["chunks"] == 4 and ingest["naive"]["chunks_per_s"] > 0
    assert report["meta"]["memory"]["peak_mb"] > 100
    md = (out / "report.md").read_text()
    assert "| recall@5 (retrieved, before filter) | 1.000 | 1.000 | 1.00× |" in md
    assert "![recall_at_k.png](recall_at_k.png)" in md


def test_eval_no_filter_keeps_every_retrieved_passage(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import app

    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(tmp_path / "indexes"))
    corpus, questions, out = _fixture_files(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--pack", "medical", "--questions", str(questions), "--corpus", str(corpus),
                                      "--out", str(out), "--no-answers", "--no-naive", "--no-filter", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["pack"]["filter"]["kind"] == "none" and report["meta"]["pack"]["filter"]["gate"] is None
    assert "--no-filter" in report["meta"]["command"]
    for r in report["records"]:
        assert r["slmrag"]["passages"] and all(p["kept"] for p in r["slmrag"]["passages"]), r["id"]


def _pack_copy(tmp_path, filter_settings: dict):
    """The medical pack's prompts and models with ``filter_settings`` (its corpus left out)."""
    import shutil

    import yaml

    from app.packs import builtin_packs_dir

    pack_dir = tmp_path / "pack"
    shutil.copytree(builtin_packs_dir() / "medical", pack_dir, ignore=shutil.ignore_patterns("corpus"))
    (pack_dir / "corpus").mkdir()
    cfg = yaml.safe_load((pack_dir / "pack.yaml").read_text())
    cfg["filter"] = filter_settings
    (pack_dir / "pack.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return pack_dir


def test_eval_variants_run_beside_the_pack_on_the_same_questions(tmp_path, monkeypatch):
    """--variant runs slmrag with one change on the same questions and index, reported beside the pack: without
    the filter every passage is kept; a cosine threshold above every score keeps none (min_keep 0)."""
    from typer.testing import CliRunner

    from app.cli import app

    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(tmp_path / "indexes"))
    corpus, questions, out = _fixture_files(tmp_path)
    pack_dir = _pack_copy(tmp_path, {"kind": "cosine", "threshold": 0.2, "min_keep": 0})
    result = CliRunner().invoke(app, ["eval", "--pack", str(pack_dir), "--questions", str(questions), "--corpus",
                                      str(corpus), "--out", str(out), "--no-answers", "--no-naive", "--quiet",
                                      "--variant", "no-filter", "--variant", "cosine=0.999"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["meta"]["variants"]) == ["slmrag[no-filter]", "slmrag[cosine]"]
    assert report["meta"]["variants"]["slmrag[cosine]"]["threshold"] == 0.999
    assert "--variant no-filter --variant cosine=0.999" in report["meta"]["command"]
    for r in report["records"]:
        assert [p["name"] for p in r["slmrag[no-filter]"]["passages"]] == [p["name"] for p in r["slmrag"]["passages"]]
        assert all(p["kept"] for p in r["slmrag[no-filter]"]["passages"]), r["id"]
        assert not any(p["kept"] for p in r["slmrag[cosine]"]["passages"]), r["id"]
    agg = report["aggregates"]["all"]
    assert agg["slmrag[no-filter]"]["filter"]["nongold_dropped_rate"] == 0.0
    assert agg["slmrag[cosine]"]["filter"]["gold_kept_rate"] == 0.0
    md = (out / "report.md").read_text()
    assert "| metric | slmrag | slmrag[no-filter] | slmrag[cosine] | naive | slmrag / naive | better |" in md
    assert "- `slmrag[cosine]`: filter.kind cosine, threshold 0.999 (given)" in md
    mem = report["meta"]["memory"]
    assert f"MB after the slmrag phase (ingest + questions), {mem['after_variants_mb']} MB after the variants" in md


def test_eval_cosine_variant_calibrates_its_threshold_on_the_questions(tmp_path, monkeypatch):
    """Given no threshold, the cosine variant keeps 95 % of the gold passages among the pack's top-k (the rule of
    `filter calibrate`): with four questions, the lowest gold score, so every gold passage is kept; and the base
    variant answers without the pack's adapter."""
    from typer.testing import CliRunner

    from app.cli import app

    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(tmp_path / "indexes"))
    if "SLMRAG_THREADS" not in os.environ:
        monkeypatch.setenv("SLMRAG_THREADS", "1")
    corpus, questions, out = _fixture_files(tmp_path)
    pack_dir = _pack_copy(tmp_path, {"kind": "none"})
    result = CliRunner().invoke(app, ["eval", "--pack", str(pack_dir), "--questions", str(questions), "--corpus",
                                      str(corpus), "--out", str(out), "--no-naive", "--quiet", "--max-tokens", "8",
                                      "--variant", "cosine", "--variant", "base"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    info = report["meta"]["variants"]["slmrag[cosine]"]
    assert 0.0 < info["threshold"] < 1.0 and "calibrated on these questions" in info["change"]
    assert report["meta"]["variants"]["slmrag[base]"]["change"].startswith("generator.adapter off")
    agg = report["aggregates"]["all"]
    assert agg["slmrag[cosine]"]["filter"]["gold_kept_rate"] == 1.0
    assert agg["slmrag"]["filter"]["nongold_dropped_rate"] == 0.0  # the pack itself keeps everything
    assert agg["slmrag[base]"]["answers"]["n"] == len(QUESTIONS)
    md = (out / "report.md").read_text()
    assert "| source | metric | n | slmrag | slmrag[cosine] | slmrag[base] | naive |" in md


@pytest.mark.parametrize("variant, message", [
    ("cosine", "filters by cosine already"),
    ("judge", "unknown variant"),
    ("no-filter=1", "takes no value"),
    ("trained", "has no filter.model"),
])
def test_eval_refuses_a_variant_that_cannot_apply_before_any_work(tmp_path, monkeypatch, variant, message):
    from typer.testing import CliRunner

    from app.cli import app

    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(tmp_path / "indexes"))
    corpus, questions, out = _fixture_files(tmp_path)
    pack_dir = _pack_copy(tmp_path, {"kind": "cosine", "threshold": 0.2})
    result = CliRunner().invoke(app, ["eval", "--pack", str(pack_dir), "--questions", str(questions), "--corpus",
                                      str(corpus), "--out", str(out), "--no-answers", "--quiet", "--variant", variant])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (out / "report.json").exists() and not (tmp_path / "indexes").exists()


def test_trained_variant_reads_the_model_as_its_threshold_was_calibrated(tmp_path):
    """--variant trained sets, beside the recorded threshold, how the model read its pairs (read_tokens) and how
    its scores were read (relative_to_best, rank_prior) when `filter calibrate` chose it; a record from before them was
    kept leaves the tokens and reads each score on its own; a given threshold (trained=T) keeps the pack's."""
    from app.evaluation.variants import Variant, apply_variant
    from app.packs import load_pack

    pack_dir = _pack_copy(tmp_path, {"kind": "cosine", "threshold": 0.2, "model": "filter"})
    info = pack_dir / "filter" / "filter.json"
    meta = json.loads(info.read_text())
    meta["dev"] = {"threshold": 0.0066, "gate": None, "read_tokens": 192, "relative_to_best": 0.75, "rank_prior": 0.8}
    info.write_text(json.dumps(meta))
    pack = load_pack(pack_dir)
    change = apply_variant(Variant("trained"), pack, None)
    cfg = pack.config.filter
    assert (cfg.kind, cfg.threshold, cfg.read_tokens, cfg.relative_to_best, cfg.rank_prior) == (
        "cross_encoder", 0.0066, 192, 0.75, 0.8)
    assert "relative to best 0.75, rank prior 0.8" in change["change"]
    meta["dev"] = {"threshold": 0.05, "gate": None}
    info.write_text(json.dumps(meta))
    pack = load_pack(pack_dir)
    pack.config.filter.relative_to_best = pack.config.filter.rank_prior = 0.5
    apply_variant(Variant("trained"), pack, None)
    assert (pack.config.filter.read_tokens, pack.config.filter.relative_to_best, pack.config.filter.rank_prior) == (
        256, 0.0, 0.0)
    pack = load_pack(pack_dir)
    pack.config.filter.relative_to_best = 0.5
    apply_variant(Variant("trained", 0.1), pack, None)
    assert (pack.config.filter.threshold, pack.config.filter.relative_to_best) == (0.1, 0.5)
    # a pack that reads its model relative to the best still switches to cosine or to no filter (they ignore it)
    for other in (Variant("cosine", 0.3), Variant("no-filter")):
        apply_variant(other, pack, None)
        assert pack.config.filter.kind in ("cosine", "none") and pack.config.filter.relative_to_best == 0.5


def test_eval_trained_variant_reads_the_calibration_recorded_beside_the_model(tmp_path, monkeypatch):
    """The medical pack ships cosine with its relevance model in filter/ and the threshold and gate `filter
    calibrate` chose for it in filter/filter.json: --variant trained measures that model beside cosine."""
    from typer.testing import CliRunner

    from app.cli import app

    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(tmp_path / "indexes"))
    corpus, questions, out = _fixture_files(tmp_path)
    pack_dir = _pack_copy(tmp_path, {"kind": "cosine", "threshold": 0.2, "model": "filter"})
    dev = json.loads((pack_dir / "filter" / "filter.json").read_text())["dev"]
    result = CliRunner().invoke(app, ["eval", "--pack", str(pack_dir), "--questions", str(questions), "--corpus",
                                      str(corpus), "--out", str(out), "--no-answers", "--no-naive", "--quiet",
                                      "--variant", "trained"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    info = report["meta"]["variants"]["slmrag[trained]"]
    assert info["threshold"] == dev["threshold"] and info["gate"] == dev["gate"]
    # the floor and keep the threshold was calibrated with (recorded by calibrate --cosine-floor/--cosine-keep)
    assert (info["cosine_floor"], info["cosine_keep"]) == (dev.get("cosine_floor"), dev.get("cosine_keep"))
    assert dev.get("cosine_floor") is not None
    decided = 0
    for r in report["records"]:
        cos = [p["filter_score"] for p in r["slmrag"]["passages"]]
        model = [p["filter_score"] for p in r["slmrag[trained]"]["passages"]]
        assert [p["name"] for p in r["slmrag"]["passages"]] == [p["name"] for p in r["slmrag[trained]"]["passages"]]
        assert all(0.0 <= s <= 1.0 for s in model if s is not None) and model != cos, r["id"]
        decided += sum(s is None for s in model)
        # a passage the floor or keep decides is not scored by the model, and says so
        for p in r["slmrag[trained]"]["passages"]:
            if p["filter_score"] is None:
                assert p["kept"] == (p["cosine"] >= dev["cosine_keep"]) and (p.get("kept_by") or p.get("dropped_by")) == "cosine"
                assert p["cosine"] >= dev["cosine_keep"] or p["cosine"] < dev["cosine_floor"]
    assert decided, "no passage was decided by the floor or keep: the check above saw nothing"
