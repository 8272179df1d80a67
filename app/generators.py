"""Generator backends. Each is a small :class:`Generator` subclass with ``load()`` and ``stream()``.

:data:`BACKENDS` is the one list of backends: pack.yaml's ``generator.backend`` is validated against it
and :func:`make_generator` builds from it, so moving to a bigger model (an HF directory, another GGUF, a
vLLM/Ollama server) is a config change, never a code change. Heavy libraries are imported inside
``load()`` with an install hint. A third-party backend subclasses :class:`Generator` and needs this one
registration, run before packs are loaded::

    from app.generators import Generator, register_backend

    class MyGenerator(Generator):
        def stream(self, messages, *, max_tokens=None): ...
        def count_tokens(self, text): ...

    register_backend("mine", MyGenerator)
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from app.env import cache_dir, threads
from app.errors import ConfigError, ModelNotFound, SlmragError, require
from app import gguf_build
from app.models import MODEL_LOAD_LOCK, resolve_model
from app.settings import GeneratorSettings

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


class Generator(abc.ABC):
    """The interface of every backend. ``stream`` and ``count_tokens`` are required; ``load`` defaults to
    nothing to load. ``yes_probability`` and ``chat_prompt`` (next-token scoring, which the ``slm_judge``
    filter uses) are optional: by default they raise a ConfigError that says what to use instead."""

    def __init__(self, settings: GeneratorSettings, base_dir: Path | None = None):
        self.settings = settings
        self.base_dir = base_dir

    def load(self) -> "Generator":
        return self

    @abc.abstractmethod
    def stream(self, messages: list[Message], *, max_tokens: int | None = None, prefix: str = "",
               stop: list[str] | None = None) -> Iterator[str]:
        """The answer's tokens as they come. ``prefix``: text the assistant's turn starts with (already
        decided, e.g. a label chosen from the logits), not repeated in the output; ``stop``: strings that
        end the answer."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int: ...

    def yes_probability(self, prompts: list[str]) -> list[float]:
        """P(yes) / (P(yes)+P(no)) of the next token after each prompt (a :meth:`chat_prompt` text)."""
        return [self.next_token_choice(p, {"yes": ["Yes", " Yes", "yes", " yes"],
                                           "no": ["No", " No", "no", " no"]})["yes"] for p in prompts]

    def next_token_choice(self, prompt: str, choices: dict[str, list[str]]) -> dict[str, float]:
        """For each choice, the probability that the next token after ``prompt`` starts one of its spellings,
        normalised over the choices (the label of a 'label' answer is chosen this way, never by parsing)."""
        raise self._no_logit_scoring()

    def chat_prompt(self, messages: list[Message]) -> str:
        """The chat template applied as text, with the assistant turn opened."""
        raise self._no_logit_scoring()

    @property
    def scores_choices(self) -> bool:
        """Whether this backend implements :meth:`next_token_choice` (known without loading the model)."""
        return type(self).next_token_choice is not Generator.next_token_choice

    def require_choice_scoring(self) -> None:
        """Raise the explanatory ConfigError now when this backend cannot score choices from logits."""
        if not self.scores_choices:
            raise self._no_logit_scoring()

    def _no_logit_scoring(self) -> ConfigError:
        return ConfigError(
            f"The '{self.settings.backend}' generator backend cannot score choices from its next-token logits, "
            "which the 'slm_judge' filter and 'label' answers need; the 'llamacpp' and 'transformers' backends "
            "can. Set generator.backend to one of them in pack.yaml, or filter.kind to another filter ('cosine' "
            "or 'cross_encoder'); 'label' answers then fall back to the label written in the text."
        )


def _normalised_choice(logits, ids: dict[str, list[int]]) -> dict[str, float]:
    import numpy as np

    m = float(np.max(logits))
    mass = {name: float(np.exp(logits[t] - m).sum()) if t else 0.0 for name, t in ids.items()}
    total = sum(mass.values()) + 1e-300
    return {name: v / total for name, v in mass.items()}


def adapter_file(settings: GeneratorSettings, base_dir: Path | None, kind: str) -> Path | None:
    """The pack's LoRA adapter for one backend: ``gguf`` (llama.cpp) or ``peft`` (its folder), or None."""
    if not settings.adapter:
        return None
    folder = Path(settings.adapter)
    if not folder.is_absolute() and base_dir is not None:
        folder = base_dir / folder
    target = folder / "adapter.gguf" if kind == "gguf" else folder
    needed = target if kind == "gguf" else folder / "adapter_model.safetensors"
    if not needed.is_file():
        raise ModelNotFound(
            f"generator.adapter points to {folder}, which has no {needed.name}. Train one with "
            "`slmrag adapt train --pack NAME --train DIR`, or remove generator.adapter from pack.yaml."
        )
    return target


# ============================================================================ llama.cpp
_EXTRA_BUFTS_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_extra_buffer_types():
    """Load llama.cpp models with ``use_extra_bufts = False``.

    Why: on Xeons that report AMX (as the 2-core machines here do), llama.cpp moves quantized weights
    into its AMX buffer type, and the first batched decode (any prompt longer than one token) dies with a
    general protection fault inside a VM that does not grant AMX tile state. llama-cpp-python does not
    expose the flag, so the default model params are wrapped while the model loads. Measured here:
    prefill 429 tok/s (Q4_0) with the flag off, versus a crash with it on.
    Set SLMRAG_LLAMA_EXTRA_BUFTS=1 to keep llama.cpp's default on hardware where it works.
    """
    import llama_cpp.llama_cpp as C

    if os.environ.get("SLMRAG_LLAMA_EXTRA_BUFTS") == "1":
        yield
        return
    with _EXTRA_BUFTS_LOCK:
        original = C.llama_model_default_params

        def patched():
            params = original()
            params.use_extra_bufts = False
            return params

        C.llama_model_default_params = patched
        try:
            yield
        finally:
            C.llama_model_default_params = original


class LlamaCppGenerator(Generator):
    """GGUF models through llama-cpp-python: loads in well under a second, ~100 tok/s for SmolLM2-135M.

    Requantizes the shipped Q4_1 file to Q4_0 once (cached): on CPU, Q4_0 prefills about twice as fast.
    A pack's LoRA adapter is merged into those weights once (cached), so it costs no decode speed.
    The system prompt is the same for every question of a pack, and llama.cpp keeps the KV cache of the
    longest common token prefix between calls, so it is not re-evaluated.
    """

    def __init__(self, settings: GeneratorSettings, base_dir: Path | None = None):
        super().__init__(settings, base_dir)
        self._llm = None
        self._lock = threading.RLock()

    def model_file(self) -> Path:
        path = resolve_model(self.settings.model, self.base_dir)
        if not isinstance(path, Path) or path.suffix != ".gguf":
            raise ModelNotFound(
                f"The llamacpp backend needs a .gguf file, got '{self.settings.model}'. Use backend "
                "'transformers' for an HF model directory or id."
            )
        return path

    def weights_file(self) -> tuple[Path, Path | None]:
        """The GGUF llama.cpp loads and the LoRA it applies at run time (None when there is none, or when the
        pack's adapter is merged into the weights: ``generator.adapter_merge``, the default)."""
        src, lora = self.model_file(), adapter_file(self.settings, self.base_dir, "gguf")
        if lora is not None and self.settings.adapter_merge:
            return gguf_build.merged(src, lora), None
        return (gguf_build.requantized(src) if self.settings.requantize == "q4_0" else src), lora

    def load(self) -> "LlamaCppGenerator":
        if self._llm is not None:  # no lock once loaded: tokenizing (prompt budgets) never waits for a generation
            return self
        with self._lock:
            if self._llm is None:
                llama_cpp = require("llama_cpp", "llama-cpp-python")
                path, lora = self.weights_file()
                with _without_extra_buffer_types():
                    self._llm = llama_cpp.Llama(
                        model_path=str(path), n_ctx=self.settings.n_ctx, n_threads=threads(),
                        n_threads_batch=threads(), n_batch=512, logits_all=False, verbose=False,
                        lora_path=str(lora) if lora else None,
                    )
        return self

    @property
    def llm(self):
        return self.load()._llm

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stream(self, messages: list[Message], *, max_tokens: int | None = None, prefix: str = "",
               stop: list[str] | None = None) -> Iterator[str]:
        s = self.settings
        sampling = dict(stream=True, max_tokens=max_tokens or s.max_tokens, temperature=s.temperature,
                        repeat_penalty=s.repeat_penalty, top_k=1 if s.temperature == 0 else 40, stop=stop or None)
        with self._lock:  # one llama context: serialise generations
            if prefix:  # the assistant turn continues after text already decided (a completion, not a chat)
                for part in self.llm.create_completion(prompt=self.chat_prompt(messages) + prefix, **sampling):
                    if part["choices"][0].get("text"):
                        yield part["choices"][0]["text"]
                return
            for part in self.llm.create_chat_completion(messages=messages, **sampling):
                delta = part["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta

    def next_token_choice(self, prompt: str, choices: dict[str, list[str]]) -> dict[str, float]:
        """See :meth:`Generator.next_token_choice`: one evaluation of the prompt, no generation.

        Consecutive prompts reuse the KV cache of the longest token prefix they share with what the
        context already holds (the chat template and, when the question comes first, the question), so
        scoring ten passages for one question prefills mostly the passages.
        """
        import numpy as np

        llm = self.llm
        ids = {name: sorted({t[0] for t in (llm.tokenize(w.encode(), add_bos=False) for w in spellings) if t})
               for name, spellings in choices.items()}
        with self._lock:
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            if not tokens:
                raise SlmragError("next_token_choice got an empty prompt.")
            if len(tokens) >= llm.n_ctx():
                raise SlmragError(
                    f"A scoring prompt of {len(tokens)} tokens does not fit the generator's context of "
                    f"{llm.n_ctx()} tokens; shorten the passage or raise generator.n_ctx.")
            cached = llm.input_ids[: llm.n_tokens]
            common = 0
            for a, b in zip(cached, tokens):
                if a != b:
                    break
                common += 1
            common = min(common, len(tokens) - 1)  # evaluate at least one token to get fresh logits
            llm.n_tokens = common  # eval() drops the KV cache beyond n_tokens first
            llm.eval(tokens[common:])
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype("float64")
        return _normalised_choice(logits, ids)

    def chat_prompt(self, messages: list[Message]) -> str:
        """The chat template applied as text, with the assistant turn opened (for logit scoring)."""
        llm = self.llm
        return _gguf_chat_prompt(llm.metadata, llm.detokenize([llm.token_bos()]), llm.detokenize([llm.token_eos()]),
                                 messages)


def _gguf_chat_prompt(metadata: dict, bos: bytes, eos: bytes, messages: list[Message]) -> str:
    """The chat template stored in a GGUF file's metadata, applied as text with the assistant turn opened."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelNotFound("The GGUF file has no chat template (tokenizer.chat_template); use an instruct model.")
    fmt = Jinja2ChatFormatter(template=template, eos_token=eos.decode("utf-8", errors="ignore"),
                              bos_token=bos.decode("utf-8", errors="ignore"), add_generation_prompt=True)
    return fmt(messages=messages).prompt


# ============================================================================ transformers
class TransformersGenerator(Generator):
    """Any HF causal LM (a directory, a cached id, or a GGUF file dequantized by transformers).

    Loading a GGUF through transformers dequantizes it (~16 s here), so the converted weights are saved
    once as safetensors in the cache and loaded from there afterwards.
    """

    def __init__(self, settings: GeneratorSettings, base_dir: Path | None = None):
        super().__init__(settings, base_dir)
        self._model = None
        self._tok = None
        self._lock = threading.RLock()

    def _load_from(self) -> tuple[str, dict]:
        target = resolve_model(self.settings.model, self.base_dir)
        if isinstance(target, Path) and target.suffix == ".gguf":
            converted = cache_dir() / f"hf-{target.stem}.{gguf_build.source_key(target)}"
            if (converted / "config.json").exists():
                return str(converted), {}
            return str(target.parent), {"gguf_file": target.name, "_convert_to": converted}
        return str(target), {}

    def load(self) -> "TransformersGenerator":
        # MODEL_LOAD_LOCK: transformers' loading (its lazy imports too) is not thread-safe, see app.models
        with self._lock, MODEL_LOAD_LOCK:
            if self._model is None:
                transformers = require("transformers")
                torch = require("torch")
                torch.set_num_threads(threads())
                where, extra = self._load_from()
                convert_to = extra.pop("_convert_to", None)
                try:
                    self._tok = transformers.AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
                    self._model = transformers.AutoModelForCausalLM.from_pretrained(
                        where, local_files_only=True, torch_dtype=torch.float32, **extra)
                except OSError as exc:
                    raise ModelNotFound(
                        f"Could not load '{self.settings.model}' with transformers offline: {exc}. Give a local "
                        "model directory or a .gguf path; nothing is downloaded at run time."
                    ) from exc
                self._model.eval()
                self._save_conversion(convert_to)
                peft_dir = adapter_file(self.settings, self.base_dir, "peft")
                if peft_dir is not None:
                    peft = require("peft")
                    self._model = peft.PeftModel.from_pretrained(self._model, str(peft_dir), is_trainable=False)
                    self._model.eval()
        return self

    def _save_conversion(self, convert_to: Path | None) -> None:
        if convert_to is not None:
            tmp = convert_to.with_name(convert_to.name + f".tmp{os.getpid()}")
            # The weights are already dequantized to float32; transformers still flags the model
            # as "gguf-quantized" and refuses to save it, so the marker is cleared first.
            self._model.hf_quantizer = None
            if hasattr(self._model.config, "quantization_config"):
                del self._model.config.quantization_config
            self._model.save_pretrained(tmp, safe_serialization=True)
            self._tok.save_pretrained(tmp)
            os.replace(tmp, convert_to) if not convert_to.exists() else None

    @property
    def model(self):
        return self.load()._model

    @property
    def tokenizer(self):
        return self.load()._tok

    def gguf_source(self) -> Path:
        """The GGUF file these weights come from (the base an adapter's GGUF export must match)."""
        target = resolve_model(self.settings.model, self.base_dir)
        if not (isinstance(target, Path) and target.suffix == ".gguf"):
            raise ModelNotFound(f"'{self.settings.model}' is not a GGUF file; a GGUF LoRA export needs a GGUF base.")
        return target

    def chat_prompt(self, messages: list[Message]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def next_token_choice(self, prompt: str, choices: dict[str, list[str]]) -> dict[str, float]:
        torch = require("torch")
        tok = self.tokenizer
        ids = {name: sorted({t[0] for t in (tok.encode(w, add_special_tokens=False) for w in spellings) if t})
               for name, spellings in choices.items()}
        x = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=x).logits[0, -1].double().numpy()
        return _normalised_choice(logits, ids)

    def count_tokens(self, text: str) -> int:
        self.load()
        return len(self._tok.encode(text, add_special_tokens=False))

    def stream(self, messages: list[Message], *, max_tokens: int | None = None, prefix: str = "",
               stop: list[str] | None = None) -> Iterator[str]:
        self.load()
        transformers = require("transformers")
        torch = require("torch")
        s = self.settings
        ids = torch.tensor([self._tok.encode(self.chat_prompt(messages) + prefix, add_special_tokens=False)])
        streamer = transformers.TextIteratorStreamer(self._tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens or s.max_tokens,
                      streamer=streamer, repetition_penalty=s.repeat_penalty,
                      pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self._tok)
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature)
        else:
            kwargs.update(do_sample=False)
        errors: list[BaseException] = []

        def run():
            try:
                with torch.inference_mode():
                    self._model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            emitted = ""
            for text in streamer:
                if text:
                    emitted += text
                    cut = _stop_at(emitted, stop)
                    if cut is not None:  # generate() includes the stop string itself; never show it
                        text = text[: max(0, len(text) - (len(emitted) - cut))]
                        if text:
                            yield text
                        break
                    yield text
            worker.join()
        if errors:
            raise SlmragError(f"Generation failed: {errors[0]}")


# ============================================================================ OpenAI-compatible
class _ServedTokenizer:
    """A local copy of the tokenizer of the model a server serves (``generator.tokenizer``): a GGUF file
    (read vocabulary-only by llama.cpp, well under a second) or an HF directory. It applies the chat
    template, which an OpenAI-compatible server keeps to itself, so that a prompt can be scored and an
    assistant turn continued through /v1/completions, and it counts tokens exactly."""

    def __init__(self, spec: str, base_dir: Path | None):
        target = resolve_model(spec, base_dir)
        self._lock = threading.Lock()  # one llama.cpp vocabulary object, shared by the app's threads
        self._vocab = self._hf = None
        if isinstance(target, Path) and target.suffix == ".gguf":
            llama_cpp = require("llama_cpp", "llama-cpp-python")
            from llama_cpp._internals import LlamaModel  # pinned llama-cpp-python: the vocabulary without a
            # context (a Llama object would allocate one, and warn that a vocabulary has no training context)

            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            self._vocab = LlamaModel(path_model=str(target), params=params, verbose=False)
            self._metadata = self._vocab.metadata()
        else:
            transformers = require("transformers")
            try:
                self._hf = transformers.AutoTokenizer.from_pretrained(str(target), local_files_only=True)
            except OSError as exc:
                raise ModelNotFound(
                    f"generator.tokenizer '{spec}' is not a .gguf file or a local HF model directory with a "
                    f"tokenizer ({exc}). Point it at the served model's own files, or remove it.") from exc

    def encode(self, text: str, special: bool = False) -> list[int]:
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=False)
        with self._lock:
            return self._vocab.tokenize(text.encode("utf-8"), False, special)

    def first_token_text(self, word: str) -> str | None:
        """The text of the first token of ``word``: what a server's top_logprobs name it by."""
        ids = self.encode(word)
        if not ids:
            return None
        if self._hf is not None:
            return self._hf.decode(ids[:1])
        with self._lock:
            return self._vocab.detokenize(ids[:1], False).decode("utf-8", errors="ignore")

    def chat_prompt(self, messages: list[Message]) -> str:
        if self._hf is not None:
            return self._hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        v = self._vocab
        with self._lock:
            return _gguf_chat_prompt(self._metadata, v.detokenize([v.token_bos()], False),
                                     v.detokenize([v.token_eos()], False), messages)


class OpenAIGenerator(Generator):
    """Any OpenAI-compatible server - vLLM, llama.cpp's server, llama-cpp-python's server, Ollama, LM Studio -
    through the official ``openai`` client: timeouts, bounded retries with backoff, streaming.

    ``load()`` asks the server which models it serves (GET /models), so a server that is not running, a
    wrong ``base_url``, a missing API key or a model name the server does not know is reported when the pack
    loads, with how to fix it, rather than at the first question. Answers stream from /chat/completions.
    With ``generator.tokenizer`` set, next-token choices (label answers, the slm_judge filter) are scored from
    /completions log-probabilities over the locally applied chat template, and an assistant turn that starts
    with a chosen label is continued the same way.
    """

    def __init__(self, settings: GeneratorSettings, base_dir: Path | None = None):
        super().__init__(settings, base_dir)
        if not settings.base_url:
            raise ConfigError("generator.base_url is required for backend 'openai' (e.g. http://127.0.0.1:8000/v1).")
        if settings.adapter:
            raise ConfigError(
                f"generator.adapter ('{settings.adapter}') cannot be sent to a server: backend 'openai' uses the "
                "model the server loaded. Start the server with the adapter (llama.cpp: --lora PATH/adapter.gguf; "
                "llama-cpp-python: --lora_path PATH/adapter.gguf; vLLM: --enable-lora --lora-modules NAME=DIR and "
                "generator.model: NAME), and remove generator.adapter from pack.yaml.")
        self._client = None
        self._tokenizer: _ServedTokenizer | None = None
        self._tokenizer_checked = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ connection
    def _api_key(self) -> str:
        name = self.settings.api_key_env
        if not name:
            # Local servers accept any key; the client insists on one. OPENAI_API_KEY is deliberately not
            # read: a cloud key is not sent to a server the pack did not ask to authenticate with.
            return "not-needed"
        key = os.environ.get(name, "")
        if not key:
            raise ConfigError(f"generator.api_key_env names the environment variable {name}, which is not set. "
                              f"Set it to the server's API key (export {name}=...), or remove api_key_env.")
        return key

    def load(self) -> "OpenAIGenerator":
        with self._lock:
            if self._client is None:
                openai = require("openai")
                s = self.settings
                client = openai.OpenAI(
                    base_url=s.base_url, api_key=self._api_key(), max_retries=s.max_retries,
                    timeout=openai.Timeout(s.timeout_s, connect=s.connect_timeout_s))
                served = self._served_models(client)
                if served and s.model not in served:
                    raise ConfigError(self._unknown_model(served))
                self._client = client
        return self

    @property
    def client(self):
        return self.load()._client

    def _served_models(self, client) -> list[str]:
        try:
            return [m.id for m in client.models.list()]
        except Exception as exc:  # _explained turns the client's errors into actionable ones
            raise self._explained(exc) from exc

    def _unknown_model(self, served: list[str]) -> str:
        return (f"The server at {self.settings.base_url} does not serve the model '{self.settings.model}' "
                f"(generator.model in pack.yaml). It serves: {', '.join(served) or 'nothing'}. Set generator.model "
                "to one of them (llama.cpp servers name a model by --model_alias, else by its path).")

    def _explained(self, exc: BaseException) -> BaseException:
        """The ``openai`` client's error as a message that says what to change; other errors unchanged."""
        openai = require("openai")
        s = self.settings
        url = s.base_url
        tries = f"{s.max_retries + 1} attempt{'s' if s.max_retries else ''}"
        if isinstance(exc, openai.APITimeoutError):
            return SlmragError(
                f"The generator server at {url} did not answer within {s.timeout_s:g} s ({tries}). It may be "
                "overloaded or still loading its model: check it, or raise generator.timeout_s in pack.yaml.")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return SlmragError(
                f"Could not connect to the generator server at {url} ({tries}: {cause}). Start it - e.g. "
                "`python -m llama_cpp.server --model MODEL.gguf --model_alias NAME --host 127.0.0.1 --port 8000` "
                "or `vllm serve MODEL --port 8000` - or fix generator.base_url in pack.yaml.")
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            where = (f"the environment variable {s.api_key_env} (generator.api_key_env)" if s.api_key_env else
                     "no key: set generator.api_key_env in pack.yaml to the name of an environment variable that "
                     "holds it")
            return ConfigError(f"The generator server at {url} refused the API key ({exc.status_code}); the key "
                               f"comes from {where}.")
        if isinstance(exc, openai.NotFoundError):
            served = self._served_models_quietly()
            if served is not None and s.model not in served:
                return ConfigError(self._unknown_model(served))
            return ConfigError(f"The generator server at {url} answered 404 Not Found ({_server_message(exc)}). "
                               "Does generator.base_url end in /v1, and does the server implement this endpoint?")
        if isinstance(exc, openai.BadRequestError):
            return SlmragError(
                f"The generator server at {url} rejected the request: {_server_message(exc)}. If the prompt is too "
                "long, set generator.n_ctx to the server's context size (and generator.tokenizer for exact counts); "
                "if it refuses that many logprobs, lower generator.logprobs or raise the server's limit (vLLM: "
                "--max-logprobs).")
        if isinstance(exc, openai.APIStatusError):
            return SlmragError(f"The generator server at {url} failed with HTTP {exc.status_code} ({tries}): "
                               f"{_server_message(exc)}")
        return exc

    def _served_models_quietly(self) -> list[str] | None:
        try:
            return [m.id for m in self._client.models.list()] if self._client is not None else None
        except Exception:  # noqa: BLE001 - only used to improve another error's message
            return None

    @contextlib.contextmanager
    def _errors(self):
        openai = require("openai")
        try:
            yield
        except openai.OpenAIError as exc:
            raise self._explained(exc) from exc

    # ------------------------------------------------------------------ tokens
    @property
    def tokenizer(self) -> _ServedTokenizer | None:
        if self.settings.tokenizer and self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = _ServedTokenizer(self.settings.tokenizer, self.base_dir)
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text))
        # No local tokenizer: ~3 characters a token overestimates English prose (~4) a little, so a prompt
        # is trimmed rather than overflowing the server's window; figures and codes run nearer 3.
        return max(1, math.ceil(len(text) / 3))

    # ------------------------------------------------------------------ generation
    def _request(self, max_tokens: int | None, stop: list[str] | None) -> dict:
        s = self.settings
        body = dict(model=s.model, max_tokens=max_tokens or s.max_tokens, temperature=s.temperature,
                    extra_body=s.extra_body)
        if stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API takes at most 4; the answer is cut at these again
        return body

    def stream(self, messages: list[Message], *, max_tokens: int | None = None, prefix: str = "",
               stop: list[str] | None = None) -> Iterator[str]:
        client = self.client
        body = self._request(max_tokens, stop)
        with self._errors():
            if prefix:  # continue an assistant turn that starts with text already decided: a plain completion
                prompt = self.chat_prompt(messages) + prefix
                with client.completions.create(prompt=prompt, stream=True, **body) as chunks:
                    for chunk in chunks:
                        if chunk.choices and chunk.choices[0].text:
                            yield chunk.choices[0].text
                return
            with client.chat.completions.create(messages=messages, stream=True, **body) as chunks:
                for chunk in chunks:
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta:
                        yield delta

    # ------------------------------------------------------------------ next-token scoring
    @property
    def scores_choices(self) -> bool:
        return bool(self.settings.tokenizer)

    def chat_prompt(self, messages: list[Message]) -> str:
        if self.tokenizer is None:
            raise self._no_logit_scoring()
        return self.tokenizer.chat_prompt(messages)

    def next_token_choice(self, prompt: str, choices: dict[str, list[str]]) -> dict[str, float]:
        """See :meth:`Generator.next_token_choice`: one /completions request for one token with the
        ``generator.logprobs`` likeliest next tokens. A choice's probability is the mass of those tokens that
        are the first token of one of its spellings (named by their text, as servers return them); a spelling
        outside the returned tokens counts as 0, hence the large default."""
        tok = self.tokenizer
        if tok is None:
            raise self._no_logit_scoring()
        firsts = {name: {t for t in (tok.first_token_text(w) for w in spellings) if t}
                  for name, spellings in choices.items()}
        with self._errors():
            resp = self.client.completions.create(
                prompt=prompt, logprobs=self.settings.logprobs, stream=False,
                **{**self._request(1, None), "temperature": 0.0})
        self._check_tokenizer(prompt, resp)
        lp = resp.choices[0].logprobs if resp.choices else None
        top = (lp.top_logprobs or [None])[0] if lp is not None else None
        if not top:
            raise SlmragError(
                f"The generator server at {self.settings.base_url} returned no log-probabilities for "
                "/v1/completions with logprobs; it cannot score choices. Remove generator.tokenizer from pack.yaml "
                "('label' answers are then read from the text), or use a server that returns them (llama-cpp-python's "
                "server, vLLM).")
        mass = {name: sum(math.exp(v) for text, v in top.items() if text in texts) for name, texts in firsts.items()}
        total = sum(mass.values())
        if total <= 0:  # none of the choices among the likeliest tokens: no preference to report
            return {name: 1.0 / len(mass) for name in mass}
        return {name: v / total for name, v in mass.items()}

    def _check_tokenizer(self, prompt: str, resp) -> None:
        """Once: the server's count of the prompt's tokens must match generator.tokenizer's, or the scored
        token texts and the prompt budget would be another model's."""
        if self._tokenizer_checked or resp.usage is None:
            return
        local = len(self.tokenizer.encode(prompt, special=True))
        if abs(resp.usage.prompt_tokens - local) > 1:  # 1: a BOS token the server adds
            raise ConfigError(
                f"generator.tokenizer ('{self.settings.tokenizer}') does not tokenize like the model served at "
                f"{self.settings.base_url}: {local} tokens here, {resp.usage.prompt_tokens} there for the same prompt. "
                "Point generator.tokenizer at the served model's own GGUF file or HF directory.")
        self._tokenizer_checked = True

    def _no_logit_scoring(self) -> ConfigError:
        return ConfigError(
            "The 'openai' generator backend scores choices from the server's next-token log-probabilities only "
            "with a local copy of the served model's tokenizer (for its chat template): set generator.tokenizer in "
            "pack.yaml to the served model's .gguf file or HF directory ('packaged:smollm2' for the packaged model). "
            "'slm_judge' filtering and logit-scored 'label' answers need it. Otherwise run the model embedded "
            "('llamacpp' or 'transformers' as generator.backend), or set filter.kind to 'cosine' or "
            "'cross_encoder'; 'label' answers are then read from the answer's text.")


def _server_message(exc) -> str:
    """The server's own error text from an ``openai.APIStatusError``."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if msg:
            return str(msg)
        if body.get("detail"):
            return str(body["detail"])
    return str(getattr(exc, "message", exc))


def _stop_at(text: str, stop: list[str] | None) -> int | None:
    """Where the first stop string starts in ``text``, if any."""
    hits = [i for i in (text.find(x) for x in (stop or ())) if i >= 0]
    return min(hits) if hits else None


BackendFactory = Callable[[GeneratorSettings, Path | None], Generator]

BACKENDS: dict[str, BackendFactory] = {
    "llamacpp": LlamaCppGenerator,
    "transformers": TransformersGenerator,
    "openai": OpenAIGenerator,
}


def register_backend(name: str, factory: BackendFactory) -> BackendFactory:
    """Add a generator backend (usually a :class:`Generator` subclass); refuses a name already taken."""
    if name in BACKENDS:
        raise SlmragError(f"A generator backend named '{name}' is already registered; register yours under "
                          "another name.")
    BACKENDS[name] = factory
    return factory


def make_generator(settings: GeneratorSettings, base_dir: Path | None = None) -> Generator:
    factory = BACKENDS.get(settings.backend)
    if factory is None:  # pragma: no cover - GeneratorSettings already validates the name against BACKENDS
        raise SlmragError(f"Unknown generator backend '{settings.backend}'. Known: {', '.join(BACKENDS)}.")
    return factory(settings, base_dir)
