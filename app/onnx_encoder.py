"""The embedder through ONNX Runtime: questions without torch, and int8 documents and questions.

Two uses, one exported graph:

* Questions (``embedder.query_runtime``): a cold ``slmrag ask`` spent ~5 of its ~10 seconds importing
  torch, transformers and sentence-transformers just to embed one short question. ONNX Runtime and the
  ``tokenizers`` library load in well under a second. The fp32 graph's vectors match sentence-transformers'
  fp32 ones to ~1e-6 cosine, so an index built by ingestion (torch) is searched exactly as before.
* ``embedder.precision: int8``: the same graph with its matrix weights quantized to int8 per output
  channel (``onnxruntime.quantization.quantize_dynamic``; activations are quantized per batch at run time),
  used for documents and questions alike. On 2 cores (AVX512-VNNI) it embeds finance chunks ~1.6x faster
  than torch bf16, at ~0.993 mean cosine to fp32 (per-tensor weights: 0.94; torch's own dynamic int8: 0.92;
  bench/embed_precision.py), which is why int8 vectors get an index of their own (``Embedder.identity``).

The graph is exported once from the same local weights (this needs torch, which ingestion or the first
query load has anyway), with the model's mean pooling and L2 normalisation inside it, and cached with its
int8 version in ``cache_dir()/onnx``. Only models whose sentence-transformers pipeline is Transformer ->
mean Pooling -> Normalize (MiniLM and most sentence embedders) are exported; for anything else
:func:`supported` says no and the embedder keeps its torch path.

A third use, the same graph over (question, passage) pairs (``pairs=True``): a trained pair model
(:class:`app.pair_model.PairModel`, the relevance filter with ``filter.precision: int8``) is MiniLM with a LoRA
adapter merged in and a small head on the same pooled vector, so its encoder is exported, keyed by the
adapter's file too, and quantized alike; the head stays outside the graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app.env import cache_dir, threads

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Part of the cache key: a graph exported by an earlier version of export() is exported again. (Version 1
# was traced without padding, so it ignored the attention mask: right for one question, wrong for a batch.)
_EXPORT_VERSION = 2


def supported(model_dir: Path) -> bool:
    """A local sentence-transformers folder with a fast tokenizer and Transformer -> mean -> Normalize."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    mean_only = pooling.get("pooling_mode_mean_tokens") and not any(
        v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
    return (kinds == ["Transformer", "Pooling", "Normalize"] and bool(mean_only)
            and (model_dir / "tokenizer.json").is_file() and (model_dir / "config.json").is_file())


def onnx_path(model_dir: Path, int8: bool = False, adapter: Path | None = None) -> Path:
    """Cache file for this model (with ``adapter``: its LoRA adapter folder merged in): keyed by the weights'
    path, size and modification time (cheap to check on every start, and a changed model gets a fresh
    export) and the export's version."""
    key = [f"export-v{_EXPORT_VERSION}"]
    files = [model_dir / name for name in ("config.json", "model.safetensors", "pytorch_model.bin")]
    if adapter is not None:
        files += [Path(adapter) / name for name in ("adapter_config.json", "adapter_model.safetensors")]
    for f in files:
        if f.is_file():
            st = f.stat()
            key.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.sha256("|".join(key).encode()).hexdigest()[:16]
    name = model_dir.name if adapter is None else f"{model_dir.name}+{Path(adapter).name}"
    return cache_dir() / "onnx" / f"{name}-{digest}" / ("model-int8.onnx" if int8 else "model.onnx")


def _write_atomically(target: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then rename: a crash midway never leaves a truncated model behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export(model_dir: Path, target: Path, build: Callable[[], object] | None = None) -> None:
    """Export the encoder with mean pooling and normalisation inside the graph (needs torch, once).
    ``build``: returns the torch encoder to export (a pair model's, its adapter merged); by default the
    model in ``model_dir``."""
    from app.models import MODEL_LOAD_LOCK

    with MODEL_LOAD_LOCK:  # transformers' loading (its lazy imports too) is not thread-safe, see app.models
        from transformers import AutoModel

        base = (build() if build is not None else
                AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")).eval()
        _export_graph(base, target)


def _export_graph(base, target: Path) -> None:
    """``base`` (a torch encoder) with mean pooling and normalisation, traced into ONNX at ``target``; the
    caller holds MODEL_LOAD_LOCK (the exporter's state is process-global)."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            # The mask goes in as an additive 4D bias: given a 2D mask, transformers decides in Python
            # whether the batch has padding, and the tracer would freeze that decision into the graph.
            mask = attention_mask.to(torch.float32)
            bias = (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
            hidden = self.model(input_ids=input_ids, attention_mask=bias,
                                token_type_ids=token_type_ids).last_hidden_state
            weights = mask.unsqueeze(-1)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the masking is traced

    def write(tmp: str) -> None:
        # The tracer still warns about Python-side branches on shapes; none of them depend on the batch.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pooled(base), (ids, mask, torch.zeros_like(ids)), tmp,
                              input_names=list(_INPUTS), output_names=["embedding"],
                              dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in _INPUTS},
                                            "embedding": {0: "batch"}},
                              opset_version=17, dynamo=False)

    _write_atomically(target, write)


def quantize(source: Path, target: Path) -> None:
    """int8 weights, one scale per output channel: per-tensor scales lose too much (0.94 mean cosine to
    fp32 on finance chunks against 0.993). No torch needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger().level  # it logs a pre-processing suggestion on the root logger
    logging.getLogger().setLevel(logging.ERROR)
    try:
        _write_atomically(target, lambda tmp: quantize_dynamic(str(source), tmp, per_channel=True,
                                                               weight_type=QuantType.QInt8))
    finally:
        logging.getLogger().setLevel(quiet)


class OnnxEncoder:
    """Embeds texts with ONNX Runtime: fp32, or int8 weights. (Token counting is the embedder's own.)"""

    def __init__(self, model_dir: Path, max_seq_tokens: int, int8: bool = False, *, pairs: bool = False,
                 adapter: Path | None = None, build: Callable[[], object] | None = None):
        """``pairs``: texts are (question, passage) pairs, truncated in the passage only, as the pair models
        read them. ``adapter`` and ``build``: a pair model's adapter folder (part of the cache key) and the
        function that returns its merged torch encoder for the one-time export (see :func:`export`)."""
        self.model_dir = Path(model_dir)
        self.max_seq_tokens = max_seq_tokens
        self.int8 = int8
        self.pairs = pairs
        self.adapter = Path(adapter) if adapter is not None else None
        self.build = build
        self._sessions: list = []  # one (fp32) or one per core (int8), see load
        self._pool = None  # threads that run the int8 lanes (see load)
        self._tokenizer = None

    def load(self, path: Path | None = None) -> "OnnxEncoder":
        """Open the cached graph (exported, and quantized, on first use), or ``path``: another ONNX file
        of the same model with the same inputs (bench/embed_precision.py compares quantizations)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if path is None:
            from app.models import MODEL_LOAD_LOCK

            path = onnx_path(self.model_dir, self.int8, self.adapter)
            fp32 = onnx_path(self.model_dir, adapter=self.adapter)
            # One export at a time, and the check with it: torch's ONNX exporter is process-global ("GLOBALS.
            # in_onnx_export must be False" when two threads export), and two threads would write one file.
            with MODEL_LOAD_LOCK:
                if not path.is_file() and not fp32.is_file():
                    export(self.model_dir, fp32, self.build)
                if not path.is_file():
                    quantize(fp32, path)
        # int8 (documents): one single-threaded session per core, each embedding its share of a batch, rather
        # than one session whose threads meet at every operator. Measured on 10 filings (2,419 pages, 10,652
        # chunks) with the int8 pack, 2 cores: ingest 92.6 s against 103.5 / 99.1 s (/work/evals/s24/lanes.sh).
        # fp32 (questions only, one short text at a time) keeps one session with all the threads.
        lanes = threads() if self.int8 else 1
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1 if lanes > 1 else threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sessions = [ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                          for _ in range(lanes)]
        if lanes > 1 and self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(lanes, thread_name_prefix="slmrag-onnx")
        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        # A pair keeps its question whole: only the passage is cut (as transformers' "only_second").
        tok.enable_truncation(self.max_seq_tokens, strategy="only_second" if self.pairs else "longest_first")
        if not self.pairs:  # pairs run one at a time, unpadded (see encode_batch)
            tok.enable_padding()  # to the longest text of each batch
        self._tokenizer = tok
        return self

    @property
    def dim(self) -> int:
        return int(self._sessions[0].get_outputs()[0].shape[1])

    def encode_batch(self, texts: Sequence[str] | Sequence[tuple[str, str]]) -> np.ndarray:
        """L2-normalised float32 vectors, one row a text or (with ``pairs``) a (question, passage) pair,
        mean-pooled over all its tokens (texts padded to the batch's longest; pairs run one by one)."""
        encs = self._tokenizer.encode_batch(list(texts))
        if self.pairs:
            return self._one_by_one(encs)
        feed = {name: np.asarray([getattr(e, attr) for e in encs], dtype="int64")
                for name, attr in zip(_INPUTS, ("ids", "attention_mask", "type_ids"))}
        if len(self._sessions) == 1 or len(texts) < 2:
            return np.asarray(self._sessions[0].run(None, feed)[0], dtype="float32")
        # ONNX Runtime releases the GIL while it runs, so the lanes compute at once. (Activations are
        # quantized per call, so a vector depends a little on its share of the batch, as on any batch size.)
        shares = [part for part in np.array_split(np.arange(len(texts)), len(self._sessions)) if len(part)]
        runs = [self._pool.submit(session.run, None, {name: arr[part] for name, arr in feed.items()})
                for session, part in zip(self._sessions, shares)]
        return np.concatenate([np.asarray(run.result()[0], dtype="float32") for run in runs])

    def _one_by_one(self, encs: list) -> np.ndarray:
        """Each pair on a run of its own, longest first, spread over the lanes. Why: a pair model's candidates
        come in retrieval's order, 80 to 256 tokens long, so a batch padded to its longest computes ~28 % padding
        (finance's top-10s); unpadded single runs read the relevance model's 10 candidates in ~107 ms p50 against
        ~163 ms batched on 2 cores (/work/evals/s31/micro.py). Activations are then quantized per pair."""
        if not encs:
            return np.zeros((0, self.dim), dtype="float32")
        out: list = [None] * len(encs)
        order = sorted(range(len(encs)), key=lambda i: -len(encs[i].ids))
        feeds = {i: {name: np.asarray([getattr(encs[i], attr)], dtype="int64")
                     for name, attr in zip(_INPUTS, ("ids", "attention_mask", "type_ids"))} for i in order}
        if len(self._sessions) == 1:
            for i in order:
                out[i] = self._sessions[0].run(None, feeds[i])[0][0]
        else:
            runs = {i: self._pool.submit(self._sessions[n % len(self._sessions)].run, None, feeds[i])
                    for n, i in enumerate(order)}
            for i, run in runs.items():
                out[i] = run.result()[0][0]
        return np.asarray(out, dtype="float32").reshape(len(encs), -1)

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]
