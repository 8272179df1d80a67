"""The sentence embedder (MiniLM by default) and its tokenizer, which also measures chunk sizes.

Cheap constructor; the weights load in :meth:`Embedder.load` (or lazily on first use).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app.env import threads
from app.errors import require
from app.models import MODEL_LOAD_LOCK, resolve_model
from app.settings import EmbedderSettings


class Embedder:
    def __init__(self, settings: EmbedderSettings, base_dir: Path | None = None):
        self.settings = settings
        self.base_dir = base_dir
        self._model = None
        self._counter: Callable[[str], int] | None = None  # count_tokens (see _token_counter)
        self._bf16 = False
        # The ONNX Runtime encoder (app.onnx_encoder): for questions only (fp32), or for everything (int8).
        self._onnx = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> str:
        return str(resolve_model(self.settings.model, self.base_dir))

    @property
    def int8(self) -> bool:
        return self.settings.precision == "int8"

    @property
    def identity(self) -> str:
        """Stored with an index: vectors from another embedder are not comparable. bf16 and fp32 vectors
        are (within 1e-4 cosine), int8 ones are not (0.99), so int8 is an embedder of its own."""
        return f"{self.settings.model}#int8" if self.int8 else self.settings.model

    # ------------------------------------------------------------------ loading
    def load(self) -> "Embedder":
        if self.int8:  # ONNX Runtime for documents and questions alike; torch only for the one-time export
            return self.load_query()
        # MODEL_LOAD_LOCK: transformers' loading (its lazy imports too) is not thread-safe, see app.models
        with self._lock, MODEL_LOAD_LOCK:
            if self._model is None:
                st = require("sentence_transformers", "sentence-transformers")
                torch = require("torch")
                torch.set_num_threads(threads())
                self._model = st.SentenceTransformer(self.model_path, device="cpu", local_files_only=True)
                self._model.max_seq_length = self.settings.max_seq_tokens
                precision = self.settings.precision
                self._bf16 = precision == "bf16" or (precision == "auto" and native_bf16())
        return self

    def load_query(self) -> "Embedder":
        """Load what answering needs: a query encoder. ONNX Runtime when the settings allow it (no torch
        import, see :mod:`app.onnx_encoder`), else the full model."""
        with self._lock:
            if self._model is None and self._onnx is None and self._query_onnx():
                from app.onnx_encoder import OnnxEncoder

                self._onnx = OnnxEncoder(Path(self.model_path), self.settings.max_seq_tokens, self.int8).load()
        if self._onnx is None:
            self.load()
        return self

    def _query_onnx(self) -> bool:
        mode = self.settings.query_runtime  # (settings refuse 'torch' with int8)
        if mode == "torch":
            return False
        import importlib.util

        from app.onnx_encoder import supported

        available = importlib.util.find_spec("onnxruntime") is not None
        path = Path(self.model_path)
        usable = available and supported(path)
        if (mode == "onnx" or self.int8) and not usable:
            from app.errors import ConfigError

            why = ("onnxruntime is not installed (pip install onnxruntime)" if not available
                   else f"{path} is not a mean-pooled sentence-transformers folder")
            if self.int8:
                raise ConfigError(f"embedder.precision is 'int8', which runs on ONNX Runtime, but {why}; "
                                  "set precision to 'auto'.")
            raise ConfigError(f"embedder.query_runtime is 'onnx' but {why}; set it to 'auto' or 'torch'.")
        return usable

    @property
    def query_runtime(self) -> str:
        """'onnx' or 'torch': what encode_query uses now."""
        return "onnx" if self._onnx is not None else "torch"

    def _token_counter(self) -> Callable[[str], int]:
        """A tokenizer of its own for counting: the model's tokenizer is reconfigured (padding,
        truncation) by every encode() call, so counting with it from the ingest's parsing thread while the
        main thread embeds is unsafe. The ``tokenizers`` library reads tokenizer.json directly (no
        transformers import; the same counts as transformers' tokenizer on 21,000 finance-filing texts);
        other models get a separate transformers tokenizer. Both count without special tokens."""
        with self._lock:
            if self._counter is None:
                spec = Path(self.model_path) / "tokenizer.json"
                if spec.is_file():
                    from tokenizers import Tokenizer

                    tok = Tokenizer.from_file(str(spec))
                    tok.no_padding()
                    tok.no_truncation()
                    self._counter = lambda text: len(tok.encode(text, add_special_tokens=False).ids)
                else:
                    transformers = require("transformers")
                    fallback = transformers.AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
                    self._counter = lambda text: len(fallback.encode(text, add_special_tokens=False))
        return self._counter

    @property
    def dim(self) -> int:
        self.load()
        if self.int8:
            return self._onnx.dim
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get_dim())

    # ------------------------------------------------------------------ use
    def count_tokens(self, text: str) -> int:
        return (self._counter or self._token_counter())(text)

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, so inner product is cosine similarity."""
        self.load()
        encode_batch = self._onnx.encode_batch if self.int8 else self._torch_batch
        return encode_sorted(texts, self.settings.batch_size, encode_batch, self.dim, progress)

    def _torch_batch(self, texts: list[str]) -> np.ndarray:
        with self._precision():
            return self._model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)

    @property
    def precision(self) -> str:
        """The precision actually used ('int8', 'bf16' or 'fp32'), once loaded."""
        return "int8" if self.int8 else "bf16" if self._bf16 else "fp32"

    def _precision(self):
        # Autocast keeps layer norms, softmax and the final pooling in fp32 and runs the matrix products
        # in bf16 with fp32 accumulation: on AMX CPUs that is ~3x the fp32 throughput
        # (bench/bench_speed.py) and the vectors stay within ~3e-5 cosine of fp32, so an index built
        # either way is searched the same.
        if not self._bf16:
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    def encode_query(self, text: str) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.encode(text)
        return self.encode([text])[0]


def encode_sorted(texts: Sequence[str], batch_size: int, encode_batch: Callable[[list[str]], np.ndarray], dim: int,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``encode_batch`` over ``texts`` in batches of ``batch_size``, sorted by length so each batch pads to
    similar lengths (much less wasted compute); the rows come back in the texts' order."""
    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), dim), dtype="float32")
    for i in range(0, len(texts), batch_size):
        idx = order[i : i + batch_size]
        out[idx] = encode_batch([texts[j] for j in idx])
        if progress:
            progress(len(idx))
    return out


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether bfloat16 matrix products beat fp32 on this CPU: where it has AMX (``amx_bf16``). AVX512-BF16
    alone is not enough: on a 2-core Xeon with AVX512-BF16 and no AMX, bf16 autocast was slower than fp32
    for everything slmrag runs in torch - embedding 64 chunks 2.61 s vs 1.69 s, the relevance model on 10
    candidates 285 vs 188 ms, a pair-model training step (16 x 256 tokens) 2.08 vs 1.18 s - while on the
    AMX machines the packs were built on it is ~2-3x faster. Elsewhere bf16 is emulated or converted and
    slower, so 'auto' and the pair models keep fp32 there."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return bf16_pays(fh.read())
    except OSError:
        return False


def bf16_pays(cpuinfo: str) -> bool:
    """:func:`native_bf16` for the text of a ``/proc/cpuinfo``: its first ``flags`` line names ``amx_bf16``."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return "amx_bf16" in line.split(":", 1)[1].split()
    return False
