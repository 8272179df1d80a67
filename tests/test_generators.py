"""Generator backends behind one interface, on the packaged SmolLM2 GGUF."""

from __future__ import annotations

import pytest

from app.generators import (
    BACKENDS, Generator, LlamaCppGenerator, TransformersGenerator, make_generator, register_backend,
)
from app.settings import GeneratorSettings

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]


def test_registry_matches_settings():
    assert set(BACKENDS) == {"llamacpp", "transformers", "openai"}
    assert isinstance(make_generator(GeneratorSettings(backend="llamacpp")), LlamaCppGenerator)
    assert all(issubclass(cls, Generator) for cls in BACKENDS.values())


def test_a_registered_backend_is_one_settings_accept(monkeypatch):
    from pydantic import ValidationError

    from app.errors import ConfigError, SlmragError

    with pytest.raises(ValidationError, match="Input should be 'llamacpp', 'transformers' or 'openai'"):
        GeneratorSettings(backend="echo")

    class EchoGenerator(Generator):
        def stream(self, messages, *, max_tokens=None):
            yield messages[-1]["content"]

        def count_tokens(self, text):
            return len(text.split())

    monkeypatch.setattr("app.generators.BACKENDS", dict(BACKENDS))  # the registration ends with the test
    register_backend("echo", EchoGenerator)
    gen = make_generator(GeneratorSettings(backend="echo")).load()
    assert "".join(gen.stream(MESSAGES)) == MESSAGES[-1]["content"]
    # next-token scoring is optional; without it the error says what to use instead
    with pytest.raises(ConfigError, match="'echo' generator backend.*'llamacpp'.*filter.kind"):
        gen.yes_probability(["Is it? Answer Yes or No."])
    with pytest.raises(ConfigError, match="'echo' generator backend"):
        gen.chat_prompt(MESSAGES)
    with pytest.raises(SlmragError, match="already registered"):
        register_backend("openai", EchoGenerator)


def test_llamacpp_streams_and_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMRAG_CACHE_DIR", str(tmp_path))  # exercises the Q4_0 requantization too
    gen = LlamaCppGenerator(GeneratorSettings(max_tokens=16)).load()
    assert list(tmp_path.glob("*.Q4_0.gguf")), "the requantized model was not cached"
    first = list(gen.stream(MESSAGES))
    assert len(first) > 1 and "".join(first).strip()
    assert "".join(gen.stream(MESSAGES)) == "".join(first)  # greedy decoding
    assert gen.count_tokens("hello world") == 2


def test_transformers_backend_loads_gguf_and_caches_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMRAG_CACHE_DIR", str(tmp_path))
    gen = TransformersGenerator(GeneratorSettings(backend="transformers", max_tokens=8)).load()
    text = "".join(gen.stream(MESSAGES))
    assert text.strip()
    converted = list(tmp_path.glob("hf-*"))
    assert converted and (converted[0] / "config.json").exists()
    assert not list(converted[0].glob("*.bin")), "weights must be stored as safetensors, not pickle"
    # a second generator loads from the converted copy, not the GGUF
    again = TransformersGenerator(GeneratorSettings(backend="transformers", max_tokens=8))
    where, extra = again._load_from()
    assert where == str(converted[0]) and extra == {}


def test_transformers_backend_loads_whole_while_another_thread_loads_a_model(tmp_path, monkeypatch):
    """transformers builds a model by patching module-level functions for the duration of the load (tie_weights
    among them), so a load in another thread - a server warming up its filter - could leave SmolLM2's tied
    lm_head on the meta device ("Cannot copy out of meta tensor", seen once in the suite). Every slmrag loader
    holds app.models.MODEL_LOAD_LOCK; here another thread loads MiniLM in a loop as they do, under the lock.
    Without the lock in the generator's load this failed (and with the worker's lazy ``transformers`` imports
    outside it, the worker died of an ImportError)."""
    import threading

    import transformers

    from app.models import MODEL_LOAD_LOCK, packaged_path

    monkeypatch.setenv("SLMRAG_CACHE_DIR", str(tmp_path))
    done, loaded, loads = threading.Event(), threading.Event(), []

    def warm_up():
        while not done.is_set():
            with MODEL_LOAD_LOCK:
                transformers.AutoModel.from_pretrained(str(packaged_path("minilm")), local_files_only=True)
            loads.append(1)
            loaded.set()

    worker = threading.Thread(target=warm_up, daemon=True)
    worker.start()
    try:
        assert loaded.wait(timeout=300), "the other thread loaded no model"
        gen = TransformersGenerator(GeneratorSettings(backend="transformers", max_tokens=8)).load()
    finally:
        done.set()
        worker.join()
    assert [k for k, p in gen.model.named_parameters() if p.device.type == "meta"] == []
    assert "".join(gen.stream(MESSAGES)).strip()


# The 'openai' backend is tested against a real server in tests/test_serving.py.


def test_prompt_always_fits_the_generator_window(tmp_pack):
    """The passage budget counts embedder tokens; the generator's tokenizer can count far more (figures,
    capitals). A small window must trim passages, never fail with 'exceeds context window'."""
    from app.assistant import Assistant, AskOptions
    from ingest.starter import ensure_index

    pack = tmp_pack("legal")
    ensure_index(pack)
    pack.config.generator.n_ctx = 640
    pack.config.filter.threshold = -1.0  # keep every retrieved passage: the budget alone decides
    pack.config.filter.max_context_tokens = 5000
    a = Assistant(pack).load()
    q = "How much notice is needed to terminate the master services agreement for convenience?"
    stream = a.ask(q, AskOptions(k=5, max_tokens=64))
    retrieved_ok = [p for p in stream.passages if p.kept]
    assert len(retrieved_ok) == 5
    answer = stream.run()
    assert answer.answer and not answer.abstained
    assert 1 <= len(answer.context) < 5
    assert a.prompts.prompt_tokens(a.prompts.messages(q, answer.context)) + stream.max_tokens <= 640
    # Without fitting, the same passages would have overflowed the window.
    assert a.prompts.prompt_tokens(a.prompts.messages(q, retrieved_ok)) + 64 > 640
