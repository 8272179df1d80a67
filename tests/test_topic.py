"""The topic gate (filter.topic_model): a logistic regression on the question's embedding that says whether
a question belongs to the pack at all. Exact checks of the fit and the threshold rule, clear errors for a
bad gate folder, and end to end with the packaged MiniLM: `slmrag filter topic` trains it from question
files and an ask it turns away keeps no passage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from app.errors import SlmragError
from app.filters.topic import TopicGate
from app.training.topic import choose_topic_threshold, cross_validated, fit_logistic

CLINICAL = [
    "What INR is targeted for a patient on warfarin?",
    "Which vasopressor is given first in septic shock?",
    "When should inhaled corticosteroids be stepped up in asthma?",
    "What is the first-line treatment for community-acquired pneumonia?",
    "How is diabetic ketoacidosis managed in adults?",
    "Which antibiotic is recommended for a penicillin-allergic patient with cellulitis?",
    "What dose of aspirin is used after a myocardial infarction?",
    "Does metformin reduce cardiovascular events in type 2 diabetes?",
    "How long should anticoagulation continue after a pulmonary embolism?",
    "What are the signs of serotonin syndrome?",
    "Is vitamin D supplementation effective for preventing fractures in the elderly?",
    "What blood pressure target is recommended for chronic kidney disease?",
]
OTHERS = [
    "Which state's law governs the supply agreement?",
    "What is the notice period for terminating the lease?",
    "Does the licence agreement contain a non-compete clause?",
    "Who are the parties to the distribution agreement?",
    "What was the company's operating margin in fiscal 2022?",
    "How much did total revenue grow between 2018 and 2019?",
    "What is the capital expenditure reported in the cash flow statement?",
    "What was the dividend per share declared in the fourth quarter?",
    "Can the licensee assign the contract without consent?",
    "What is the cap on liability under the services agreement?",
    "What was net income attributable to shareholders in 2021?",
    "How much long-term debt matures within five years?",
]


def test_fit_separates_two_clusters_and_is_deterministic():
    x = np.array([[1.0, 0.1], [0.9, -0.1], [1.1, 0.0], [-1.0, 0.1], [-0.9, 0.0], [-1.1, -0.1]])
    y = np.array([1, 1, 1, 0, 0, 0])
    w, b = fit_logistic(x, y)
    assert (x @ w + b > 0).tolist() == [True, True, True, False, False, False]
    w2, b2 = fit_logistic(x, y)
    assert np.array_equal(w, w2) and b == b2


def test_fit_weighs_each_class_the_same_in_total():
    # One positive against three identical negatives at the same point: balanced, the positive's pull
    # equals theirs, so the decision value there stays 0 (an unweighted fit would go negative).
    x = np.array([[0.0], [0.0], [0.0], [0.0]])
    w, b = fit_logistic(x, np.array([1, 0, 0, 0]))
    assert abs(b) < 1e-12 and abs(w[0]) < 1e-12


def test_fit_refuses_one_class():
    with pytest.raises(SlmragError, match="both kinds"):
        fit_logistic(np.zeros((3, 2)), np.ones(3))


def test_threshold_gates_at_most_the_allowed_share():
    scores = [0.9, 0.1, 0.5, 0.7, 0.3]
    assert choose_topic_threshold(scores, 0.2) == 0.3  # 1 of 5 (0.1) may fall below
    assert choose_topic_threshold(scores, 0.0) == 0.1  # none below
    assert choose_topic_threshold(scores, 0.39) == 0.3  # floor(1.95) = 1
    assert choose_topic_threshold(scores, 0.4) == 0.5  # 2 of 5


def test_cross_validation_scores_each_row_by_a_fit_without_it():
    x = np.array([[1.0], [1.2], [0.8], [1.1], [-1.0], [-1.2], [-0.8], [-1.1], [0.9], [-0.9]])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    a, b = cross_validated(x, y, folds=5, seed=3), cross_validated(x, y, folds=5, seed=3)
    assert np.array_equal(a, b) and ((a > 0.5) == (y > 0)).all()


def _write_gate(folder, weight, bias=0.0, embedder="packaged:minilm"):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": np.asarray(weight, "float32"), "bias": np.array([bias], "float32")},
              str(folder / "topic.safetensors"))
    (folder / "topic.json").write_text(json.dumps({"embedder": embedder}))
    return folder


def test_gate_scores_a_vector_by_hand(tmp_path):
    gate = TopicGate(_write_gate(tmp_path / "g", [2.0, 0.0], bias=-1.0))
    assert gate.score(np.array([0.5, 9.0])) == pytest.approx(0.5)  # 2*0.5 - 1 = 0
    assert gate.score(np.array([1.0, 0.0])) == pytest.approx(1 / (1 + np.exp(-1.0)))


@pytest.mark.parametrize("damage, message", [
    ("missing", "holds no topic gate.*filter topic"),
    ("garbage", "could not be read.*filter topic"),
    ("nan", "non-finite"),
    ("other_embedder", "trained on the vectors of 'other-model'"),
])
def test_bad_gate_folder_is_a_clear_error(tmp_path, damage, message):
    folder = tmp_path / "g"
    if damage != "missing":
        _write_gate(folder, [float("nan"), 1.0] if damage == "nan" else [1.0, 1.0],
                    embedder="other-model" if damage == "other_embedder" else "packaged:minilm")
    if damage == "garbage":
        (folder / "topic.safetensors").write_bytes(b"\x80\x04not a tensor file")
    with pytest.raises(SlmragError, match=message):
        TopicGate(folder, "packaged:minilm").load()


def test_vector_of_another_size_is_a_clear_error(tmp_path):
    gate = TopicGate(_write_gate(tmp_path / "g", [1.0, 1.0, 1.0]))
    with pytest.raises(SlmragError, match="3-dimensional.*gives 2"):
        gate.score(np.array([1.0, 0.0]))


@pytest.mark.slow
def test_cli_trains_a_gate_that_turns_other_fields_questions_away(tmp_path):
    """`slmrag filter topic` on question files, then asks on the pack: the gate decides before the filter."""
    from app.assistant import AskOptions, Assistant
    from app.packs import load_pack_dir
    from conftest import tiny_pack_dir
    from ingest.ingestor import Ingestor

    docs = {"anticoag.txt": "Anticoagulation. Warfarin dosing aims at an INR of 2.0 to 3.0. Vitamin K reverses "
                            "warfarin. Supply agreements for anticoagulants are governed by hospital policy.",
            "sepsis.txt": "Sepsis bundle. Give broad-spectrum antibiotics within one hour. Norepinephrine is the "
                          "first vasopressor. Revenue of the sepsis unit grew in 2019."}
    pack_dir = tiny_pack_dir(tmp_path / "pack", "tinytopic", docs)
    mine, others = tmp_path / "mine.jsonl", tmp_path / "others.jsonl"
    mine.write_text("".join(json.dumps({"id": f"m{i}", "question": q}) + "\n" for i, q in enumerate(CLINICAL)))
    others.write_text("".join(json.dumps({"id": f"o{i}", "question": q}) + "\n" for i, q in enumerate(OTHERS)))
    env = {**os.environ, "SLMRAG_INDEX_DIR": str(tmp_path / "idx")}
    done = subprocess.run([sys.executable, "-m", "app.cli", "filter", "topic", "--pack", str(pack_dir), "--train",
                           str(mine), "--out-of-pack", str(others), "--max-false", "0", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    assert meta["in_questions"] == 12 and meta["out_questions"] == 12 and meta["embedder"] == "packaged:minilm"
    assert sorted(p.name for p in (pack_dir / "topic").iterdir()) == ["topic.json", "topic.safetensors"]

    pack = load_pack_dir(pack_dir).with_index_dir(tmp_path / "idx")
    assert pack.config.filter.topic_model == "topic"
    assert pack.config.filter.topic_threshold == pytest.approx(meta["threshold"], abs=1e-4)
    Ingestor(pack).ingest([pack_dir / "corpus"])
    assistant = Assistant(pack).load(generator=False)
    # Threshold 0 keeps every passage the gate lets through: what is dropped here, the gate dropped.
    away = assistant.retrieve("Which state's law governs the anticoagulant supply agreement?", AskOptions(k=2, threshold=0.0))
    assert away.passages and not away.kept and not any(p.kept for p in away.passages)
    report = away.filter_json()
    assert report["off_topic"] is True and report["topic_score"] < report["topic_threshold"]
    inside = assistant.retrieve("Which vasopressor comes first in sepsis?", AskOptions(k=2, threshold=0.0))
    assert inside.kept and inside.filter_json()["off_topic"] is False
    # The override kind 'none' asks without any filtering, the gate included.
    unfiltered = assistant.retrieve("Which state's law governs the anticoagulant supply agreement?",
                                    AskOptions(k=2, filter="none"))
    assert unfiltered.kept and "off_topic" not in unfiltered.filter_json()
