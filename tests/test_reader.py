"""The label reader trained on labelled rows: real MiniLM, real index, the packaged generator; small and fast.

Checks that a reader trained on a few rows states their labels when the pack asks them (the generator
does not choose the label), that what is saved is a few MB of safetensors with its metadata, and that a
reader trained for other labels is refused with a message.
"""

from __future__ import annotations

import json
import shutil

import pytest

from app.answers.reader import LabelReader
from app.assistant import Assistant
from app.errors import SlmragError
from app.packs import load_pack_dir
from app.training.reader import build_examples, train_reader
from app.training.selector import build_examples as build_selector_examples, train_selector
from conftest import tiny_pack_dir
from ingest.ingestor import Ingestor

pytestmark = pytest.mark.slow

DOCS = {
    "statin.txt": "Statins in older adults. OBJECTIVE: To test whether statins lower stroke risk in adults over 75. "
                  "CONCLUSIONS: Statins clearly reduced strokes in adults over 75 and are recommended.",
    "zinc.txt": "Zinc for colds. OBJECTIVE: To test whether zinc lozenges shorten the common cold in children. "
                "METHODS: Children took 10 mg of zinc twice a day for five days. "
                "CONCLUSIONS: Zinc lozenges did not shorten colds in children and are not recommended.",
    "walk.txt": "Walking after surgery. OBJECTIVE: To test whether early walking after hip surgery shortens the "
                "hospital stay. METHODS: Patients walked 50 metres on the first day after surgery. CONCLUSIONS: Early walking shortened the stay by two days and is recommended.",
    "tea.txt": "Green tea and memory. OBJECTIVE: To test whether green tea improves memory in students. "
               "CONCLUSIONS: Green tea did not improve memory in students; it is not recommended.",
}
ROWS = [
    {"id": "s", "question": "Do statins lower stroke risk in adults over 75?", "doc": "statin.txt", "answer": "yes",
     "evidence": "Statins clearly reduced strokes in adults over 75 and are recommended."},
    {"id": "z", "question": "Do zinc lozenges shorten colds in children?", "doc": "zinc.txt", "answer": "no",
     "evidence": "Zinc lozenges did not shorten colds in children and are not recommended."},
    {"id": "w", "question": "Does early walking after hip surgery shorten the hospital stay?", "doc": "walk.txt",
     "answer": "yes", "evidence": "Early walking shortened the stay by two days and is recommended."},
    {"id": "t", "question": "Does green tea improve memory in students?", "doc": "tea.txt", "answer": "no",
     "evidence": "Green tea did not improve memory in students; it is not recommended."},
]


EXTRACT_ROWS = [
    {"id": "d", "question": "What dose of zinc did the children take?", "doc": "zinc.txt",
     "answer": "10 mg of zinc twice a day", "evidence": "Children took 10 mg of zinc twice a day for five days."},
    {"id": "m", "question": "How long did early walking shorten the stay?", "doc": "walk.txt",
     "answer": "by two days", "evidence": "Early walking shortened the stay by two days and is recommended."},
    {"id": "f", "question": "What distance did patients walk on the first day?", "doc": "walk.txt",
     "answer": "50 metres", "evidence": "Patients walked 50 metres on the first day after surgery."},
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader")
    pack_dir = tiny_pack_dir(root / "pack", "tinyreader", DOCS)
    pack = load_pack_dir(pack_dir).with_index_dir(root / "index")
    Ingestor(pack).ingest([pack_dir / "corpus"])
    assistant = Assistant(pack).load(generator=False)
    labels = list(pack.config.answers.labels)
    absent = {"id": "u", "question": "Does vitamin D prevent falls in nursing homes?", "doc": "tea.txt",
              "answer": "", "answerable": False}
    examples = build_examples(assistant, ROWS + [absent], labels)
    meta = train_reader(examples * 8, labels, pack_dir / "label_reader", epochs=4, lr=1e-3, rank=8, seed=0)
    sentences = build_selector_examples(assistant, EXTRACT_ROWS)
    train_selector(sentences * 8, pack_dir / "extract_selector", epochs=4, lr=1e-3, rank=8, seed=0, span=True)
    return pack_dir, root, examples, meta, sentences


def test_examples_hold_each_rows_verdict_once_and_other_passages_as_none(trained):
    _, _, examples, _, _ = trained
    verdicts = sorted((e.row_id, e.target) for e in examples if e.target != "none")
    assert verdicts == [("s", "yes"), ("t", "no"), ("w", "yes"), ("z", "no")]
    assert any(e.target == "none" for e in examples if e.row_id != "u")
    assert {e.target for e in examples if e.row_id == "u"} == {"none"}  # an absent clause: only near misses


def test_saved_reader_is_small_safetensors_with_its_labels(trained):
    pack_dir, _, _, meta, _ = trained
    files = sorted(p.name for p in (pack_dir / "label_reader").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "head.safetensors", "reader.json"]
    assert (pack_dir / "label_reader" / "adapter_model.safetensors").stat().st_size < 5_000_000
    info = json.loads((pack_dir / "label_reader" / "reader.json").read_text())
    assert info["labels"] == ["yes", "no", "maybe"] and info["seed"] == 0 and meta["steps"] > 0
    # the base is named, not this machine's path to it
    config = json.loads((pack_dir / "label_reader" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "packaged:minilm"


def _answers_with(trained, setting: str, rows: list[dict]) -> list[dict]:
    """Each row's question asked through a copy of the trained pack with ``answers.<setting>`` switched on."""
    pack_dir, root, _, _, _ = trained
    own = root / f"own-{setting}"
    shutil.copytree(pack_dir, own, dirs_exist_ok=True)
    text = (own / "pack.yaml").read_text()
    (own / "pack.yaml").write_text(text.replace("answers:\n", f"answers:\n  {setting}: {setting}\n", 1))
    assistant = Assistant(load_pack_dir(own).with_index_dir(root / "index")).load()
    out = []
    for row in rows:
        stream = assistant.ask(row["question"])
        "".join(stream)
        out.append(stream.answer.to_json())
    return out


def test_pack_with_a_reader_answers_its_label_from_the_reader(trained):
    for row, a in zip(ROWS, _answers_with(trained, "label_reader", ROWS)):
        assert a["label"] == row["answer"], (row["question"], a)
        assert a["details"]["label_by"] == "reader" and a["grounded"], a
        assert a["citations"] and a["citations"][0]["name"] == row["doc"], a


def test_reader_trained_for_other_labels_is_refused(trained):
    pack_dir, _, _, _, _ = trained
    with pytest.raises(SlmragError, match="trained for the labels"):
        LabelReader.from_folder(pack_dir / "label_reader", ["yes", "no"])
    with pytest.raises(SlmragError, match="adapt reader"):
        LabelReader.from_folder(pack_dir / "nothing", ["yes", "no"])


def test_selector_examples_mark_the_sentence_holding_the_answer(trained):
    _, _, _, _, sentences = trained
    for row in EXTRACT_ROWS:
        pos = [e.sentence for e in sentences if e.row_id == row["id"] and e.label > 0]
        assert pos and all(row["answer"] in s for s in pos), (row["id"], pos)
        assert any(e.label == 0 for e in sentences if e.row_id == row["id"])


def test_label_selector_examples_teach_the_sentence_that_states_the_verdict(trained):
    """For 'label' rows (answer "yes"/"no", not text of any sentence) the positives are the sentences made
    mostly of the gold evidence's words (the evidence itself; also a short title sharing most of its words),
    and the other sentences of the retrieved passages are negatives."""
    pack_dir, root, _, _, _ = trained
    assistant = Assistant(load_pack_dir(pack_dir).with_index_dir(root / "index")).load(generator=False)
    sentences = build_selector_examples(assistant, ROWS, shape="label")
    for row in ROWS:
        pos = [e.sentence for e in sentences if e.row_id == row["id"] and e.label > 0]
        assert any(s.endswith(row["evidence"]) for s in pos), (row["id"], pos)
        assert not any("OBJECTIVE" in s for s in pos)
        assert any(e.label == 0 and "OBJECTIVE" in e.sentence for e in sentences if e.row_id == row["id"])
        assert all(e.span is None for e in sentences)
    with pytest.raises(SlmragError, match="No 'label' training row"):  # extract rows teach no label's sentence
        build_selector_examples(assistant, EXTRACT_ROWS, shape="label")


def test_pack_with_a_label_selector_quotes_the_sentence_it_was_taught_states_the_verdict(trained, tmp_path):
    """A label selector trained on the rows' evidence, in a copy of the pack with the reader: each label is
    still the reader's, and its quote is the sentence the selector ranks first - one of those it was taught
    (the evidence, or a title sharing its words) - marked as the selector's choice."""
    pack_dir, root, _, _, _ = trained
    own = tmp_path / "pack"
    shutil.copytree(pack_dir, own)
    assistant = Assistant(load_pack_dir(own).with_index_dir(root / "index")).load(generator=False)
    taught = build_selector_examples(assistant, ROWS, shape="label")
    train_selector(taught * 8, own / "label_selector", epochs=4, lr=1e-3, rank=8, seed=0)
    text = (own / "pack.yaml").read_text()
    (own / "pack.yaml").write_text(text.replace(
        "answers:\n", "answers:\n  label_reader: label_reader\n  label_selector: label_selector\n", 1))
    assistant = Assistant(load_pack_dir(own).with_index_dir(root / "index")).load()
    for row in ROWS:
        stream = assistant.ask(row["question"])
        "".join(stream)
        a = stream.answer.to_json()
        quote = a["details"]["quote"]
        assert a["label"] == row["answer"] and a["details"]["label_by"] == "reader" and a["grounded"], a
        assert quote["by"] == "selector", quote
        positives = [e.sentence for e in taught if e.row_id == row["id"] and e.label > 0]
        assert any(p.endswith(quote["text"]) for p in positives), (quote, positives)


def test_selector_examples_mark_the_answer_inside_the_answering_sentence(trained):
    _, _, _, _, sentences = trained
    for row in EXTRACT_ROWS:
        pos = [e for e in sentences if e.row_id == row["id"] and e.label > 0]
        assert all(e.sentence[e.span[0]:e.span[1]] == row["answer"] for e in pos), (row["id"], pos)
    assert all(e.span is None for e in sentences if e.label == 0)


def test_pack_with_a_selector_quotes_the_answering_sentence_without_generating(trained):
    """The selector was trained with a span head: the answer is the marked part of the sentence, shown with
    the sentence; both are the passage's own words."""
    for row, a in zip(EXTRACT_ROWS, _answers_with(trained, "extract_selector", EXTRACT_ROWS)):
        quote = a["details"]["quote"]
        assert a["shape"] == "extract" and quote["by"] == "selector", a
        assert row["answer"] in a["answer"] and a["grounded"] and a["timings"]["tokens"] == 0, a
        assert row["answer"] in quote["sentence"] and quote["text"] in quote["sentence"], quote
        assert set(row["answer"].split()) & set(quote["text"].split()), quote
        assert len(quote["text"]) < len(quote["sentence"]) and a["answer"].startswith(quote["text"] + " \u2014 "), a


@pytest.mark.parametrize("damaged", ["head.safetensors", "span/span.safetensors"])
def test_a_damaged_model_file_is_named_with_how_to_get_a_good_one(tmp_path, damaged):
    """The shipped medical selector (with its span model) copied, one weight file cut short: loading names
    the file and says to reinstall or retrain, rather than a bare safetensors error."""
    from pathlib import Path

    from app.answers.selector import SentenceSelector

    src = Path(__file__).resolve().parents[1] / "domains" / "medical" / "extract_selector"
    folder = tmp_path / "extract_selector"
    shutil.copytree(src, folder)
    f = folder / damaged
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(SlmragError, match=rf"{f.name}: .*(reinstall the pack|train this model again)"):
        SentenceSelector.from_folder(folder).load()
