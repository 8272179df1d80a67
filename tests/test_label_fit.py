"""Fitting the label offsets (app/training/labels.py): exact cases checkable by hand, no model."""

from __future__ import annotations

import math

import pytest

from app.pack_edit import set_label_bias
from app.packs import load_pack
from conftest import with_cosine_filter
from app.settings import PackConfig
from app.training.labels import LabelRow, cross_validated, fit_bias, gold_label, predict, scores

LABELS = ["yes", "no", "maybe"]


def _rows(spec):
    return [LabelRow(str(i), gold, dict(zip(LABELS, probs))) for i, (gold, probs) in enumerate(spec)]


def test_gold_label_from_the_answer_or_from_answerable():
    assert gold_label({"answer": "Maybe"}, LABELS) == "maybe"
    assert gold_label({"answer": "The Effective Date", "answerable": True}, ["yes", "no"]) == "yes"
    assert gold_label({"answer": "", "answerable": False}, ["yes", "no"]) == "no"
    assert gold_label({"answer": "12 months"}, ["yes", "no"]) is None


def test_fit_reproduces_the_label_frequencies_when_the_model_is_uninformative():
    # The model always says 1/3 each; 3 of 4 rows are "yes", 1 "no", none "maybe". Maximum likelihood makes
    # the predicted distribution equal the observed one: P(yes) = 3/4, P(no) = 1/4, i.e. offset(no) = ln(1/3)
    # relative to yes; "maybe" is never seen, so its offset keeps falling (bounded by the step count).
    flat = (1 / 3, 1 / 3, 1 / 3)
    rows = _rows([("yes", flat), ("yes", flat), ("yes", flat), ("no", flat)])
    bias = fit_bias(rows, LABELS)
    assert bias["yes"] == 0.0
    assert bias["no"] == pytest.approx(math.log(1 / 3), abs=1e-3)
    assert bias["maybe"] < -3
    assert all(predict(r.probs, LABELS, bias) == "yes" for r in rows)


def test_fit_undoes_a_standing_preference_and_scores_say_so():
    # The model prefers "no" by a factor 4 whatever the row; its ranking is still right (the gold label
    # has twice the probability it has elsewhere). Without offsets every row is "no": 2 of 4 right.
    yes_row, no_row = (0.2, 0.8, 0.0), (0.1, 0.9, 0.0)
    rows = _rows([("yes", yes_row), ("yes", yes_row), ("no", no_row), ("no", no_row)])
    two = ["yes", "no"]
    before = scores(rows, two, {})
    assert before["accuracy"] == 0.5 and before["predicted"] == {"yes": 0, "no": 4}
    bias = fit_bias(rows, two)
    after = scores(rows, two, bias)
    assert after["accuracy"] == 1.0 and after["macro_f1"] == 1.0
    # ln(0.8/0.2) = 1.386 and ln(0.9/0.1) = 2.197: the fitted offset of "no" lies between, negated
    assert -2.197 < bias["no"] < -1.386
    held = cross_validated(rows * 5, two, folds=5)
    assert held["n"] == 20 and held["accuracy"] == 1.0


def test_set_label_bias_writes_quoted_labels_and_keeps_comments(tmp_path):
    pack = load_pack("medical")
    path = tmp_path / "pack.yaml"
    path.write_text((pack.path / "pack.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    text = set_label_bias(path, {"yes": 0.0, "no": -0.51234, "maybe": 0.25})
    assert '"yes": 0.0' in text and "# a yes/no question" in text
    import yaml

    cfg = PackConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert cfg.answers.label_bias == {"yes": 0.0, "no": -0.5123, "maybe": 0.25}
    set_label_bias(path, {"yes": 0.0, "no": 0.1, "maybe": 0.0})  # a second write replaces, not appends
    assert path.read_text(encoding="utf-8").count("label_bias") == 1


@pytest.mark.slow
def test_adapt_labels_asks_the_rows_as_the_pack_does_and_writes_the_offsets(tmp_path):
    """End to end with the real parts: `slmrag adapt labels` ingests a generated training folder, asks its
    label-routed rows through the pack's retrieval, filter, prompt and the packaged SmolLM2 (with the pack's
    adapter), fits the offsets and writes them into a copy of the pack. The row that is not a yes/no
    question (routed to extract) is not asked."""
    import json
    import shutil
    import subprocess
    import sys

    import yaml

    pack_dir = tmp_path / "pack"
    shutil.copytree(load_pack("medical").path, pack_dir, ignore=shutil.ignore_patterns("corpus"))
    # these one-line "studies" test the fit, not what medical's relevance model (trained on abstracts) makes of them
    (pack_dir / "pack.yaml").write_text(with_cosine_filter((pack_dir / "pack.yaml").read_text(encoding="utf-8")))
    (pack_dir / "corpus").mkdir()
    train = tmp_path / "train"
    (train / "corpus").mkdir(parents=True)
    topics = [("statin", "Statins lowered LDL cholesterol by 30 percent in 400 adults over two years."),
              ("sleep", "Shift workers slept 40 minutes less; error rates did not differ between groups."),
              ("diet", "A Mediterranean diet lowered weight in 900 adults; effects on heart events were unclear."),
              ("exercise", "Daily walking reduced systolic blood pressure by 5 mmHg in 300 older adults.")]
    rows = []
    for name, text in topics:
        (train / "corpus" / f"{name}.txt").write_text(f"{name.title()} study. {text}\n", encoding="utf-8")
        for i, (q, a) in enumerate([(f"Did the {name} study find an effect?", "yes"),
                                    (f"Was the {name} study negative?", "no"),
                                    (f"Is the {name} finding certain?", "maybe")]):
            rows.append({"id": f"{name}{i}", "question": q, "answer": a, "doc": f"{name}.txt", "evidence": text})
    rows.append({"id": "x", "question": "What did the statin study measure?", "answer": "LDL", "doc": "statin.txt",
                 "evidence": "LDL cholesterol"})
    (train / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    out = subprocess.run([sys.executable, "-m", "app", "adapt", "labels", "--pack", str(pack_dir), "--train", str(train),
                          "--index-dir", str(tmp_path / "index"), "--json", "--write"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    # 12 yes/no/maybe rows are asked, the 'What' row is not; a row whose passages the filter drops all of is
    # skipped (the pack would abstain on it), and at least 10 must remain for a fit
    assert 10 <= result["rows"] <= 12 and result["before"]["n"] == result["rows"]
    assert set(result["label_bias"]) == set(LABELS) and result["label_bias"]["yes"] == 0.0
    assert sum(result["fitted"]["predicted"].values()) == result["rows"]
    written = yaml.safe_load((pack_dir / "pack.yaml").read_text(encoding="utf-8"))["answers"]["label_bias"]
    assert written == {k: round(v, 4) for k, v in result["label_bias"].items()}
    assert load_pack(pack_dir).config.answers.label_bias == written
