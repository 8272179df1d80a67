"""The relevance model trained on labelled rows: real MiniLM, real index, generated rows; small and fast.

Checks that training on labels teaches the filter which passage answers (gold above the others), that
what is saved is a few MB of safetensors the pack can ship, and that the pack's ``filter.model`` loads it.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from app.assistant import Assistant, AskOptions
from app.packs import load_pack_dir
from app.training.relevance import build_pairs, train_relevance
from conftest import tiny_pack_dir
from ingest.ingestor import Ingestor

pytestmark = pytest.mark.slow

DOCS = {
    "anticoag.txt": "Anticoagulation. Warfarin dosing aims at an INR of 2.0 to 3.0. Mechanical mitral valves need an "
                    "INR of 2.5 to 3.5. Vitamin K reverses warfarin.",
    "sepsis.txt": "Sepsis bundle. Give broad-spectrum antibiotics within one hour. Norepinephrine is the first "
                  "vasopressor. Target a mean arterial pressure of 65 mmHg.",
    "asthma.txt": "Asthma plan. Inhaled corticosteroids control symptoms. A spacer improves inhaler delivery. "
                  "Step up treatment when symptoms occur more than twice a week.",
}
ROWS = [
    {"id": "a", "question": "What INR is targeted for a mechanical mitral valve?", "doc": "anticoag.txt",
     "answer": "2.5 to 3.5", "evidence": "Mechanical mitral valves need an INR of 2.5 to 3.5."},
    {"id": "b", "question": "Which vasopressor comes first in sepsis?", "doc": "sepsis.txt",
     "answer": "Norepinephrine", "evidence": "Norepinephrine is the first vasopressor."},
    {"id": "c", "question": "When should asthma treatment be stepped up?", "doc": "asthma.txt",
     "answer": "more than twice a week", "evidence": "Step up treatment when symptoms occur more than twice a week."},
]
OUT_OF_PACK = [{"id": "x", "question": "Which state's law governs the supply agreement?"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("relevance")
    pack_dir = tiny_pack_dir(root / "pack", "tinyfilter", DOCS)
    pack = load_pack_dir(pack_dir).with_index_dir(root / "index")
    Ingestor(pack).ingest([pack_dir / "corpus"])
    assistant = Assistant(pack).load(generator=False)
    pairs = build_pairs(assistant, ROWS, out_of_pack=OUT_OF_PACK, k=3)
    meta = train_relevance(pairs * 10, pack_dir / "filter", epochs=3, batch_size=8, lr=1e-3, seed=0)
    return pack_dir, root, pairs, meta


def test_pairs_have_gold_same_and_other_document_negatives(trained):
    _, _, pairs, _ = trained
    kinds = {p.kind for p in pairs}
    assert {"gold", "out_of_pack"} <= kinds and kinds & {"same_doc", "other_doc"}
    assert sum(p.label for p in pairs) == 3  # one gold passage per row


def test_saved_model_is_small_safetensors_with_metadata(trained):
    pack_dir, _, _, meta = trained
    files = sorted(p.name for p in (pack_dir / "filter").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "filter.json", "head.safetensors"]
    assert (pack_dir / "filter" / "adapter_model.safetensors").stat().st_size < 5_000_000
    assert json.loads((pack_dir / "filter" / "filter.json").read_text())["seed"] == 0 and meta["steps"] > 0
    from app.pair_model import head_scale

    # The pooled vector is read at the scale it was trained with (stored in the head file).
    assert head_scale(pack_dir / "filter" / "head.safetensors") == 20.0 and meta["pooled_scale"] == 20.0


@pytest.mark.parametrize("metadata, expected", [(None, 1.0), ({"pooled_scale": "2.5"}, 2.5),
                                                ({"pooled_scale": "nan"}, None), ({"pooled_scale": "-1"}, None),
                                                ({"pooled_scale": "big"}, None)])
def test_head_scale_is_read_from_the_head_file(tmp_path, metadata, expected):
    """A head saved before the scale existed reads as 1; a scale that is not a positive number is refused
    (the model would score every passage the same or backwards)."""
    import torch
    from safetensors.torch import save_file

    from app.pair_model import head_scale

    path = tmp_path / "head.safetensors"
    save_file({"weight": torch.zeros(1, 4), "bias": torch.zeros(1)}, str(path), metadata=metadata)
    if expected is None:
        with pytest.raises(ValueError, match="pooled_scale"):
            head_scale(path)
    else:
        assert head_scale(path) == expected


def test_pack_filter_model_ranks_gold_first(trained):
    pack_dir, root, _, _ = trained
    text = (pack_dir / "pack.yaml").read_text()
    text = text.replace("filter:\n", "filter:\n  model: filter\n", 1).replace("kind: cosine", "kind: cross_encoder")
    (pack_dir / "pack.yaml").write_text(text)
    pack = load_pack_dir(pack_dir).with_index_dir(root / "index")
    assistant = Assistant(pack).load(generator=False)
    for row in ROWS:
        found = assistant.retrieve(row["question"], AskOptions(k=3, threshold=0.0)).passages
        best = max(found, key=lambda p: p.filter_score)
        assert best.name == row["doc"], (row["question"], [(p.name, p.filter_score) for p in found])


def test_missing_filter_model_is_a_clear_error(tmp_path):
    from app.filters.cross_encoder import RelevanceModel
    from app.errors import SlmragError

    with pytest.raises(SlmragError, match="filter train"):
        RelevanceModel.from_folder(tmp_path / "nothing")


def test_gate_abstains_on_out_of_pack_questions_the_trained_filter_would_keep(trained, tmp_path):
    """filter.gate: cosine decides whether the question belongs here, the trained model which passages."""
    pack_dir, root, _, _ = trained
    own = tmp_path / "pack"
    shutil.copytree(pack_dir, own)
    text = (own / "pack.yaml").read_text()
    if "model: filter" not in text:
        text = text.replace("filter:\n", "filter:\n  model: filter\n", 1)
    (own / "pack.yaml").write_text(text.replace("kind: cosine", "kind: cross_encoder"))

    def retrieve(gate, question):
        yaml_text = (own / "pack.yaml").read_text()
        lines = [l for l in yaml_text.splitlines() if not l.strip().startswith("gate:")]
        (own / "pack.yaml").write_text("\n".join(lines).replace("filter:", f"filter:\n  gate: {gate}", 1) + "\n")
        assistant = Assistant(load_pack_dir(own).with_index_dir(root / "index")).load(generator=False)
        return assistant.retrieve(question, AskOptions(k=3, threshold=0.0))

    inside, outside = ROWS[1]["question"], OUT_OF_PACK[0]["question"]
    probe_in, probe_out = retrieve(-1.0, inside), retrieve(-1.0, outside)
    assert all(p.kept for p in probe_out.passages)  # threshold 0: the trained filter alone keeps everything
    assert probe_in.gate_score > probe_out.gate_score + 0.05, (probe_in.gate_score, probe_out.gate_score)

    gate = round((probe_in.gate_score + probe_out.gate_score) / 2, 4)
    gated, kept = retrieve(gate, outside), retrieve(gate, inside)
    assert gated.kept == [] and not any(p.kept for p in gated.passages)
    assert gated.filter_json() == {"kind": "cross_encoder", "threshold": 0.0, "min_keep": 0, "gate": gate,
                               "gate_score": probe_out.gate_score, "gated": True}
    assert kept.kept and kept.kept[0].name == ROWS[1]["doc"] and kept.filter_json()["gated"] is False


def test_int8_reads_pairs_as_fp32_does_and_loads_without_torch_once_cached(trained, tmp_path, monkeypatch):
    """filter.precision int8: the merged encoder exported to ONNX and quantized on first use, into the cache;
    it ranks every row's passages as the torch model does, within int8's noise, and once cached a new process
    scores with it without importing torch."""
    import subprocess
    import sys

    from app.filters.cross_encoder import RelevanceModel
    from app.onnx_encoder import onnx_path
    from app.pair_model import base_model_dir

    pack_dir = trained[0]
    monkeypatch.setenv("SLMRAG_CACHE_DIR", str(tmp_path / "cache"))
    fp32 = RelevanceModel.from_folder(pack_dir / "filter")
    int8 = RelevanceModel.from_folder(pack_dir / "filter", precision="int8")
    texts = list(DOCS.values())
    for row in ROWS:
        a, b = fp32.score_texts(row["question"], texts), int8.score_texts(row["question"], texts)
        assert max(abs(x - y) for x, y in zip(a, b)) < 0.05, (a, b)
        assert texts.index(DOCS[row["doc"]]) == max(range(3), key=b.__getitem__)
    cached = onnx_path(base_model_dir(), True, pack_dir / "filter")
    assert cached.is_file() and cached.parent.parent == tmp_path / "cache" / "onnx"
    code = ("import sys; from app.filters.cross_encoder import RelevanceModel; "
            "s = RelevanceModel.from_folder(sys.argv[1], precision='int8').score_texts(sys.argv[2], [sys.argv[3]]); "
            "print(round(s[0], 6), 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code, str(pack_dir / "filter"), ROWS[0]["question"], texts[0]],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "SLMRAG_CACHE_DIR": str(tmp_path / "cache")})
    score, torch_loaded = res.stdout.split()
    assert abs(float(score) - int8.score_texts(ROWS[0]["question"], [texts[0]])[0]) < 1e-5 and torch_loaded == "False"


def test_two_threads_first_int8_questions_export_once(tmp_path, monkeypatch):
    """Two threads' first questions to int8 relevance models (an Assistant's per-index filters; the UI's
    sessions) with nothing cached: torch's ONNX exporter is process-global, and two exports at once failed
    ("GLOBALS.in_onnx_export must be False", the suite's concurrency test with medical's int8 filter). The
    export and the cache check hold app.models.MODEL_LOAD_LOCK: one exports, the other reads its file."""
    import threading

    from app.filters.cross_encoder import RelevanceModel
    from conftest import REPO

    monkeypatch.setenv("SLMRAG_CACHE_DIR", str(tmp_path / "cache"))
    models = [RelevanceModel.from_folder(REPO / "domains" / "medical" / "filter", precision="int8") for _ in range(2)]
    scores, errors = {}, []
    start = threading.Barrier(2)

    def ask(i: int) -> None:
        try:
            start.wait(timeout=60)
            scores[i] = models[i].score_texts("Does aspirin prevent stroke?", ["Aspirin lowered stroke risk."])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == [] and scores[0] == scores[1], (errors, scores)
    assert len(list((tmp_path / "cache" / "onnx").glob("*/model-int8.onnx"))) == 1


def test_an_int8_graph_is_cached_per_adapter(tmp_path, monkeypatch):
    """The ONNX cache is keyed by the adapter's files too: another (or retrained) adapter is exported afresh."""
    from app.onnx_encoder import onnx_path
    from app.pair_model import base_model_dir

    monkeypatch.setenv("SLMRAG_CACHE_DIR", str(tmp_path / "cache"))
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, weights in ((a, b"1"), (b, b"1")):
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(weights)
    first = onnx_path(base_model_dir(), True, a)
    assert first != onnx_path(base_model_dir(), True, b) != onnx_path(base_model_dir(), True)
    (a / "adapter_model.safetensors").write_bytes(b"22")  # retrained: another size and time
    assert onnx_path(base_model_dir(), True, a) != first and first.name == "model-int8.onnx"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_question_longer_than_the_window_is_read_by_its_first_tokens(trained, tmp_path, monkeypatch, precision):
    """A pair keeps its question whole and cuts the passage; a pasted paragraph longer than the window used
    to be refused by the tokenizer ('Truncation error') and failed the ask. It is cut instead, leaving the
    passage PASSAGE_MIN_TOKENS; a question that fits is read unchanged."""
    from app.filters.cross_encoder import RelevanceModel
    from app.pair_model import PASSAGE_MIN_TOKENS

    monkeypatch.setenv("SLMRAG_CACHE_DIR", str(tmp_path / "cache"))
    model = RelevanceModel.from_folder(trained[0] / "filter", precision=precision)
    pair = model._pair
    long_question = ROWS[0]["question"] + " " + "please consider the anticoagulation record carefully " * 60
    [score] = model.score_texts(long_question, [DOCS["anticoag.txt"]])
    assert 0.0 <= score <= 1.0
    cut = pair._bounded(long_question)
    assert long_question.startswith(cut) and len(pair._bounded._words.encode(cut, add_special_tokens=False).ids) == \
        pair.max_length - PASSAGE_MIN_TOKENS - 3
    assert pair._bounded(ROWS[0]["question"]) == ROWS[0]["question"]


def test_a_training_row_with_a_question_longer_than_the_window_is_learnt_from_its_first_tokens(tmp_path):
    """The trainers read pairs as the models do: a row whose question is longer than the window (a pasted
    paragraph in someone's training file) used to stop the whole run with the tokenizer's 'Truncation error'."""
    import torch

    from app.pair_model import PairModel
    from app.training.pair_model import train_pair_model

    long_question = ROWS[0]["question"] + " " + "please consider the anticoagulation record carefully " * 60
    pairs = [(long_question, DOCS["anticoag.txt"]), (ROWS[1]["question"], DOCS["anticoag.txt"])]
    meta = train_pair_model(pairs, [1.0, 0.0], tmp_path / "model", outputs=1, info_name="model.json", epochs=1,
                            batch_size=2, max_length=128, seed=0,
                            loss=lambda logits, y: torch.nn.functional.binary_cross_entropy_with_logits(
                                logits.view(-1), torch.tensor(y)))
    assert meta["pairs"] == 2 and meta["steps"] == 1
    assert PairModel(tmp_path / "model", max_length=128).logits(long_question, [DOCS["anticoag.txt"]]).shape == (1, 1)


def test_the_label_free_trainer_learns_from_a_pseudo_question_longer_than_its_window(tmp_path):
    """`slmrag filter train` without --train (pseudo-questions from the index): a statement longer than the
    training window is cut as a long question is read, once, instead of stopping the run with the tokenizer's
    truncation error."""
    from app.training.cross_encoder import TrainingPair, train_cross_encoder

    long_query = ROWS[0]["question"] + " " + "please consider the anticoagulation record carefully " * 60
    pairs = [TrainingPair(long_query, DOCS["anticoag.txt"], 1.0, "sentence", 0, 0),
             TrainingPair(long_query, "The cafeteria opens at seven and serves breakfast until ten.", 0.0, "random", 1, 0)]
    report = train_cross_encoder(None, tmp_path / "ce", pairs=pairs, max_steps=1, batch_size=2, train_max_length=64,
                                 max_length=128, seed=0)
    assert report.steps == 1 and (tmp_path / "ce" / "model.safetensors").is_file()
    # a 64-token window is shorter than the passage minimum (64) plus three special tokens: it splits evenly
    from app.pair_model import QuestionBound

    bound = QuestionBound(64)
    cut = bound(long_query)
    assert long_query.startswith(cut) and len(bound._words.encode(cut, add_special_tokens=False).ids) == 64 - 32 - 3
