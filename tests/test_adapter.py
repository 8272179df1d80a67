"""A tiny LoRA adapter trained in seconds on generated rows, exported to GGUF, loaded by both backends.

Real components: the packaged SmolLM2 (transformers for training and the peft backend, llama.cpp for the
GGUF LoRA), the packaged MiniLM, a real index over files the test writes. The rows all answer "maybe", so
after training both backends must give "maybe" more probability than the base model does - which also
checks that the GGUF export (tensor names, shapes, the q/k row order llama.cpp uses) matches peft's.
"""

from __future__ import annotations

import json
import shutil

import pytest

from app.assistant import Assistant
from app.generators import make_generator
from app.packs import load_pack_dir
from app.settings import GeneratorSettings
from app.training.adapter import GGUF_FILE, build_examples, train_adapter
from ingest.ingestor import Ingestor

pytestmark = pytest.mark.slow

DOCS = {
    "statin_trial.txt": "Statin trial. In 120 adults, statins lowered LDL by 30 percent. Whether events fell stayed unclear.",
    "sleep_study.txt": "Sleep study. Shift workers slept 40 minutes less. Effects on errors were mixed across sites.",
    "diet_cohort.txt": "Diet cohort. A Mediterranean diet cohort of 900 people showed lower weight; heart effects were uncertain.",
}
ROWS = [
    {"id": "r1", "question": "Do statins reduce cardiac events?", "answer": "maybe", "doc": "statin_trial.txt",
     "evidence": "Whether events fell stayed unclear.", "long_answer": "Whether events fell stayed unclear."},
    {"id": "r2", "question": "Does shift work increase errors?", "answer": "maybe", "doc": "sleep_study.txt",
     "evidence": "Effects on errors were mixed across sites.", "long_answer": "Effects on errors were mixed across sites."},
    {"id": "r3", "question": "Does a Mediterranean diet protect the heart?", "answer": "maybe", "doc": "diet_cohort.txt",
     "evidence": "heart effects were uncertain.", "long_answer": "A Mediterranean diet cohort of 900 people showed lower weight; heart effects were uncertain."},
]
PROBE = "Do statins lower LDL cholesterol in adults?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter")
    pack_dir = root / "pack"
    shutil.copytree(load_pack_dir_path("medical"), pack_dir, ignore=shutil.ignore_patterns("corpus", "adapter"))
    (pack_dir / "corpus").mkdir()
    text = (pack_dir / "pack.yaml").read_text(encoding="utf-8").replace("name: medical", "name: tinyadapt")
    (pack_dir / "pack.yaml").write_text("\n".join(l for l in text.splitlines() if not l.strip().startswith("adapter:")) + "\n")
    corpus = root / "train" / "corpus"
    corpus.mkdir(parents=True)
    for name, body in DOCS.items():
        (corpus / name).write_text(body, encoding="utf-8")
    pack = load_pack_dir(pack_dir).with_index_dir(root / "index")
    Ingestor(pack).ingest([corpus])
    assistant = Assistant(pack).load(generator=False)
    examples = build_examples(pack, assistant, ROWS, seed=0, drop_gold=0.0)
    assert len(examples) == 3 and all(e.has_gold and e.target.startswith("Maybe.") for e in examples)
    out = pack_dir / "adapter"
    report = train_adapter("packaged:smollm2", examples * 2, out, rank=4, alpha=32, lr=5e-3, grad_accum=2, seed=0,
                           info={"test": True})
    return pack, assistant, out, report


def load_pack_dir_path(name: str):
    from app.packs import load_pack

    return load_pack(name).path


def _maybe_probability(backend: str, adapter: str | None, pack, messages, merge: bool = True) -> float:
    gen = make_generator(GeneratorSettings(backend=backend, adapter=adapter, adapter_merge=merge), pack.path)
    return gen.next_token_choice(gen.chat_prompt(messages), {"yes": ["Yes"], "no": ["No"], "maybe": ["Maybe"]})["maybe"]


def test_adapter_files_and_metadata(trained):
    pack, _, out, report = trained
    assert sorted(p.name for p in out.iterdir()) == ["adapter.gguf", "adapter.json", "adapter_config.json",
                                                     "adapter_model.safetensors"]
    meta = json.loads((out / "adapter.json").read_text())
    assert meta["examples"] == 6 and meta["seed"] == 0 and meta["test"] is True and meta["steps"] == 3
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in out.iterdir())
    assert report.tokens > 0 and (out / GGUF_FILE).stat().st_size > 10_000
    # the base is named as the pack names it, not by this machine's path to its dequantized copy
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == pack.config.generator.model


@pytest.mark.parametrize("backend,merge", [("llamacpp", True), ("llamacpp", False), ("transformers", True)])
def test_both_backends_load_the_adapter_and_answers_change(trained, backend, merge):
    """llama.cpp both ways: merged into the weights (the default) and applied at run time (lora_path)."""
    pack, assistant, out, _ = trained
    passages = assistant.retriever.search(PROBE, 3)
    messages = assistant.prompts.messages(PROBE, passages, "label")
    base = _maybe_probability(backend, None, pack, messages)
    adapted = _maybe_probability(backend, "adapter", pack, messages, merge)
    assert adapted > base + 0.05, (backend, merge, base, adapted)
    if backend == "llamacpp" and merge:  # the merged model answers as the adapter applied at run time does
        runtime = _maybe_probability(backend, "adapter", pack, messages, False)
        assert abs(adapted - runtime) < 0.5 * (runtime - base), (base, adapted, runtime)


def test_a_missing_adapter_is_a_clear_error(trained):
    pack, *_ = trained
    gen = make_generator(GeneratorSettings(backend="llamacpp", adapter="no-such-adapter"), pack.path)
    with pytest.raises(Exception, match="adapt train"):
        gen.load()


def test_same_data_and_seed_train_the_same_adapter(trained, tmp_path):
    """Reproducible training: a second run with the same examples and seed writes identical weights
    (safetensors and GGUF alike); another seed does not."""
    from safetensors.numpy import load_file

    pack, assistant, out, _ = trained
    examples = build_examples(pack, assistant, ROWS, seed=0, drop_gold=0.0)
    kwargs = dict(rank=4, alpha=32, lr=5e-3, grad_accum=2, info={"test": True})
    train_adapter("packaged:smollm2", examples * 2, tmp_path / "again", seed=0, **kwargs)
    train_adapter("packaged:smollm2", examples * 2, tmp_path / "other", seed=1, **kwargs)
    first, again, other = (load_file(str(d / "adapter_model.safetensors")) for d in (out, tmp_path / "again", tmp_path / "other"))
    assert first.keys() == again.keys() and all((first[k] == again[k]).all() for k in first)
    assert (out / GGUF_FILE).read_bytes() == (tmp_path / "again" / GGUF_FILE).read_bytes()
    assert any(not (first[k] == other[k]).all() for k in first)


def _report(pack_name: str, sha: str | None, *, adapter: str | None = "adapter", run: int = 200, total: int = 200) -> dict:
    """The parts of an `slmrag eval` report.json that `adapt record` reads."""
    return {"meta": {"command": "slmrag eval --pack x", "answers": True, "questions_file": "q.jsonl",
                     "questions_run": run, "questions_total": total,
                     "pack": {"name": pack_name, "generator": {"adapter": adapter, "adapter_sha256": sha}}},
            "aggregates": {"all": {"slmrag": {
                "answers": {"tasks": {"pubmedqa": {"n": 100, "accuracy": 0.55}}, "abstention_rate": 0.1,
                            "grounded_rate": 0.9, "withheld_rate": 0.05},
                "latency": {"first_token_s": {"p50": 1.9}}, "tokens_per_s": {"mean": 80.0}}}}}


def test_adapt_record_keeps_full_dev_figures_of_this_adapter_only(tmp_path):
    from typer.testing import CliRunner

    from app.cli import app
    from app.packs import builtin_packs_dir
    from app.store import file_sha256

    pack_dir = tmp_path / "pack"
    shutil.copytree(builtin_packs_dir() / "medical", pack_dir, ignore=shutil.ignore_patterns("corpus", "filter"))
    (pack_dir / "corpus").mkdir()
    sha = file_sha256(pack_dir / "adapter" / GGUF_FILE)
    name = load_pack_dir(pack_dir).name

    def record(report: dict, base: dict | None = None):
        (tmp_path / "r.json").write_text(json.dumps(report))
        args = ["adapt", "record", "--pack", str(pack_dir), "--report", str(tmp_path / "r.json")]
        if base is not None:
            (tmp_path / "b.json").write_text(json.dumps(base))
            args += ["--base", str(tmp_path / "b.json")]
        return CliRunner().invoke(app, args)

    before = (pack_dir / "adapter" / "adapter.json").read_bytes()
    for bad, why in [(_report(name, "0" * 64), "current adapter"), (_report(name, sha, run=12), "full set"),
                     (_report("legal", sha), "not 'medical'")]:
        result = record(bad)
        assert result.exit_code != 0 and why in " ".join(result.output.split()), result.output
    assert (pack_dir / "adapter" / "adapter.json").read_bytes() == before  # a refused report changes nothing

    result = record(_report(name, sha), _report(name, None, adapter=None))
    assert result.exit_code == 0, result.output
    dev = json.loads((pack_dir / "adapter" / "adapter.json").read_text())["dev"]
    assert dev["tasks"]["pubmedqa"]["accuracy"] == 0.55 and dev["n"] == 200 and dev["first_token_p50_s"] == 1.9
    assert dev["base_model"]["tasks"]["pubmedqa"]["n"] == 100 and dev["command"] == "slmrag eval --pack x"

    # The pack's label reader and sentence selector get the figures too, each only if the report measured it.
    reader_sha = file_sha256(pack_dir / "label_reader" / "adapter_model.safetensors")
    report = _report(name, sha)
    report["meta"]["pack"]["answers"] = {"label_reader": {"folder": "label_reader", "sha256": reader_sha},
                                         "extract_selector": {"folder": "extract_selector", "sha256": "0" * 64}}
    selector_before = (pack_dir / "extract_selector" / "selector.json").read_bytes()
    assert record(report).exit_code == 0
    assert json.loads((pack_dir / "label_reader" / "reader.json").read_text())["dev"]["tasks"]["pubmedqa"]["n"] == 100
    assert (pack_dir / "extract_selector" / "selector.json").read_bytes() == selector_before
