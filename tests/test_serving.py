"""The 'openai' backend against a real OpenAI-compatible engine on loopback: llama-cpp-python's own server
(its ``server`` extra) serving the packaged GGUF, started here as a subprocess.

Also the error cases, each against a real socket on loopback: nothing listening, a server that drops
every connection (to count the bounded retries), one that never answers, one that wants an API key.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from app.errors import ConfigError, MissingDependency, SlmragError
from app.generators import LlamaCppGenerator, OpenAIGenerator, make_generator
from app.local_server import LocalModelServer, LocalServerError, free_port
from app.models import packaged_path
from app.settings import GeneratorSettings

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
pytest.importorskip("openai")

ALIAS = "smollm2"
MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalModelServer(packaged_path("smollm2"), alias=ALIAS, threads=1, n_ctx=2048, deadline_s=90,
                          log=tmp_path_factory.mktemp("server") / "log.txt") as local:
        yield local.base_url


@pytest.fixture(scope="module")
def embedded():
    # The same GGUF file the server loaded (not the Q4_0 requantization), for like-for-like comparisons.
    return LlamaCppGenerator(GeneratorSettings(requantize="none")).load()


def served(base_url: str, **kw) -> OpenAIGenerator:
    return make_generator(GeneratorSettings(backend="openai", model=ALIAS, base_url=base_url, **kw))


def test_streams_the_same_greedy_answer_as_the_embedded_model(server, embedded):
    gen = served(server, tokenizer="packaged:smollm2").load()
    pieces = list(gen.stream(MESSAGES, max_tokens=24))
    assert len(pieces) > 1, "the answer should arrive in pieces"
    text = "".join(pieces)
    assert text.strip()
    # Greedy decoding, same file, same repeat penalty (the server's default 1.1 is the pack's): same text.
    assert text == "".join(embedded.stream(MESSAGES, max_tokens=24))
    # An assistant turn continued after a decided prefix goes through /completions on the local template.
    cont = "".join(gen.stream(MESSAGES, max_tokens=12, prefix="The capital"))
    assert cont == "".join(embedded.stream(MESSAGES, max_tokens=12, prefix="The capital"))
    assert gen.count_tokens("hello world") == embedded.count_tokens("hello world") == 2


def test_label_choice_from_server_logprobs_matches_the_embedded_logits(server, embedded):
    gen = served(server, tokenizer="packaged:smollm2").load()
    assert gen.scores_choices
    choices = {"yes": ["yes", "Yes", " yes", " Yes"], "no": ["no", "No", " no", " No"]}
    for question in ["Is Paris the capital of France?", "Is the moon made of cheese?"]:
        prompt = gen.chat_prompt([{"role": "user", "content": question + " Answer yes or no."}])
        assert prompt == embedded.chat_prompt([{"role": "user", "content": question + " Answer yes or no."}])
        remote, local = gen.next_token_choice(prompt, choices), embedded.next_token_choice(prompt, choices)
        assert set(remote) == {"yes", "no"} and abs(sum(remote.values()) - 1) < 1e-9
        # Only the top-20 tokens come back from the server; the spellings outside them carry little mass.
        assert remote["yes"] == pytest.approx(local["yes"], abs=0.03), (question, remote, local)


def test_without_a_tokenizer_labels_are_not_scored_and_the_error_says_what_to_set(server):
    gen = served(server).load()
    assert not gen.scores_choices
    with pytest.raises(ConfigError, match="generator.tokenizer"):
        gen.require_choice_scoring()
    assert gen.count_tokens("a" * 30) == 10  # the estimate: ~3 characters a token, on the safe side


def test_a_wrong_tokenizer_is_caught_by_the_servers_token_count(server, tmp_path):
    gen = served(server, tokenizer="packaged:smollm2").load()
    gen.tokenizer.encode = lambda text, special=False: list(range(len(text)))  # a tokenizer of another model
    with pytest.raises(ConfigError, match="does not tokenize like the model served"):
        gen.next_token_choice("<|im_start|>user\nIs it?<|im_end|>\n<|im_start|>assistant\n", {"yes": ["Yes"], "no": ["No"]})


def test_unknown_model_lists_what_the_server_serves(server):
    with pytest.raises(ConfigError, match=rf"does not serve the model 'gpt-4o'.*It serves: {ALIAS}"):
        make_generator(GeneratorSettings(backend="openai", model="gpt-4o", base_url=server)).load()


def test_ask_end_to_end_through_the_server(server, tmp_pack, tmp_path):
    """A pack whose generator is the server: retrieval, streamed answer, citations, a logit-scored label."""
    from app.assistant import AskOptions, Assistant
    from ingest.ingestor import Ingestor

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "warfarin_protocol.txt").write_text(
        "Warfarin protocol\n\nFor a mechanical mitral valve the target INR range is 2.5 to 3.5. Check the INR "
        "weekly until it is stable, then every four weeks.\n\nVitamin K is given when the INR is above 10.\n")
    (corpus / "sepsis_bundle.txt").write_text(
        "Sepsis bundle\n\nWithin the first hour measure lactate, take blood cultures before antibiotics, give "
        "broad-spectrum antibiotics and 30 mL/kg crystalloid for hypotension. Norepinephrine is the first-choice "
        "vasopressor, to keep a mean arterial pressure of at least 65 mmHg.\n")
    pack = tmp_pack("medical")
    g = pack.config.generator
    g.adapter = None  # a server loads its own adapter (see OpenAIGenerator); this one serves the base model
    g.backend, g.model, g.base_url, g.tokenizer, g.max_retries = "openai", ALIAS, server, "packaged:smollm2", 0
    # This test is about the server writing and scoring answers: without this, the pack's trained label
    # reader and sentence selector would answer both questions with nothing generated.
    pack.config.answers.label_reader = pack.config.answers.extract_selector = None
    Ingestor(pack).ingest([corpus])
    a = Assistant(pack).load()
    assert isinstance(a.generator, OpenAIGenerator)

    stream = a.ask("What is the target INR range for a mechanical mitral valve?", AskOptions(max_tokens=48))
    answer = stream.run()
    assert answer.answer and not answer.abstained
    assert answer.timings["tokens"] > 1, "the server's answer should have streamed in pieces"
    assert answer.citations and answer.citations[0]["source"].endswith("warfarin_protocol.txt")

    stream = a.ask("Is norepinephrine the first-choice vasopressor in the sepsis bundle?", AskOptions(max_tokens=48))
    answer = stream.run()
    assert answer.shape == "label" and answer.label in {"yes", "no", "maybe"}
    assert set(answer.details["label_scores"]) >= {"yes", "no", "maybe"}, answer.details  # scored, not parsed


# ---------------------------------------------------------------------------------------- errors
def test_nothing_listening_fails_fast_with_how_to_start_a_server():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t = time.perf_counter()
    with pytest.raises(SlmragError, match=r"Could not connect to the generator server at .*Start it.*generator\.base_url"):
        served(url, max_retries=0).load()
    assert time.perf_counter() - t < 5


def test_retries_are_bounded():
    """A server that accepts and drops every connection: the client tries max_retries + 1 times, then stops."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[int] = []
    done = threading.Event()

    def drop_all():
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    worker = threading.Thread(target=drop_all, daemon=True)
    worker.start()
    try:
        with pytest.raises(SlmragError, match="3 attempts"):
            served(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", max_retries=2).load()
    finally:
        done.set()
        worker.join(timeout=5)
        listener.close()
    assert len(accepted) == 3


def test_a_server_that_never_answers_times_out():
    listener = socket.socket()  # listening but never accepting: the kernel completes connections, nobody replies
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        t = time.perf_counter()
        with pytest.raises(SlmragError, match=r"did not answer within 0.5 s.*generator\.timeout_s"):
            served(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", timeout_s=0.5, max_retries=0).load()
        assert time.perf_counter() - t < 5
    finally:
        listener.close()


class _WantsKey(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        ok = self.headers.get("Authorization") == "Bearer s3cret"
        body = {"object": "list", "data": [{"id": ALIAS, "object": "model"}]} if ok else {
            "error": {"message": "Invalid API key", "type": "invalid_request_error"}}
        raw = json.dumps(body).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _WantsKey)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "s3cret")  # never read unless the pack names it
        with pytest.raises(ConfigError, match=r"refused the API key \(401\).*set generator.api_key_env"):
            served(url).load()
        monkeypatch.delenv("SLMRAG_TEST_KEY", raising=False)
        with pytest.raises(ConfigError, match="SLMRAG_TEST_KEY, which is not set"):
            served(url, api_key_env="SLMRAG_TEST_KEY").load()
        monkeypatch.setenv("SLMRAG_TEST_KEY", "wrong")
        with pytest.raises(ConfigError, match="refused the API key.*SLMRAG_TEST_KEY"):
            served(url, api_key_env="SLMRAG_TEST_KEY").load()
        monkeypatch.setenv("SLMRAG_TEST_KEY", "s3cret")
        assert served(url, api_key_env="SLMRAG_TEST_KEY", max_retries=0).load().client is not None
    finally:
        server.shutdown()
        server.server_close()


def test_the_amx_launcher_serves_and_a_failed_start_shows_the_log_tail(tmp_path):
    """bench/concurrency.py's launcher (llama_cpp.server's main inside the AMX workaround) serves the model,
    and a server that dies at start fails fast with a SlmragError that quotes its log."""
    amx = LocalModelServer(packaged_path("smollm2"), alias=ALIAS, threads=1, n_ctx=512, deadline_s=90,
                           log=tmp_path / "amx.log", amx_workaround=True, interrupt_requests=False)
    with amx, urllib.request.urlopen(f"{amx.base_url}/models", timeout=5) as resp:
        assert [m["id"] for m in json.load(resp)["data"]] == [ALIAS]
    with pytest.raises(LocalServerError, match=r"(?s)exited with 1 before it answered.*Model path does not exist"):
        LocalModelServer(tmp_path / "missing.gguf", alias=ALIAS, threads=1, n_ctx=512, deadline_s=90,
                         log=tmp_path / "missing.log", amx_workaround=True).start()


def test_without_the_server_extra_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr("app.local_server._SERVER_MODULES", ("llama_cpp.server", "slmrag_no_such_module"))
    with pytest.raises(MissingDependency, match=r"slmrag_no_such_module.*pip install 'slmrag\[serve\]'"):
        LocalModelServer(packaged_path("smollm2"), alias=ALIAS, threads=1, n_ctx=512, log=tmp_path / "log").start()


def test_openai_backend_config_errors():
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIGenerator(GeneratorSettings(backend="openai"))
    with pytest.raises(ConfigError, match="--lora_path"):
        OpenAIGenerator(GeneratorSettings(backend="openai", base_url="http://127.0.0.1:1/v1", adapter="adapter"))
    assert os.environ.get("SLMRAG_THREADS") == "1"  # conftest: the server is started with one thread too


def test_an_hf_tokenizer_directory_serves_like_the_gguf(tmp_path):
    """generator.tokenizer may be an HF directory (what a vLLM user has): same template, counts, token texts."""
    from transformers import AutoTokenizer

    from app.generators import _ServedTokenizer

    gguf = packaged_path("smollm2")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp_path / "tok")
    hf, native = _ServedTokenizer(str(tmp_path / "tok"), None), _ServedTokenizer("packaged:smollm2", None)
    assert hf.chat_prompt(MESSAGES) == native.chat_prompt(MESSAGES)
    text = "The target INR is 2.5 to 3.5 for a mechanical mitral valve."
    assert hf.encode(text) == native.encode(text)
    assert [hf.first_token_text(w) for w in ["Yes", " Yes", " maybe", "I"]] == ["Yes", " Yes", " maybe", "I"]
    assert [native.first_token_text(w) for w in ["Yes", " Yes", " maybe", "I"]] == ["Yes", " Yes", " maybe", "I"]
