"""Query embeddings through ONNX Runtime, so answering a question never imports torch.

A cold ``slmrag ask`` spent ~5 of its ~10 seconds importing torch, transformers and
sentence-transformers just to embed one short question. ONNX Runtime and the ``tokenizers`` library load
in well under a second. The ONNX graph is exported once from the same local weights (this needs torch,
which ingestion uses anyway), with the model's mean pooling and L2 normalisation inside it, and cached in
``cache_dir()/onnx``; its vectors match sentence-transformers' fp32 ones to ~1e-6 cosine, so an index
built by ingestion (torch) is searched exactly as before.

Only models whose sentence-transformers pipeline is Transformer -> mean Pooling -> Normalize (MiniLM and
most sentence embedders) are exported; for anything else :func:`supported` says no and the embedder keeps
its torch path.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from app.env import cache_dir, threads

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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


def onnx_path(model_dir: Path) -> Path:
    """Cache file for this model: keyed by the weights' path, size and modification time (cheap to check
    on every start, and a changed model gets a fresh export)."""
    key = []
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        f = model_dir / name
        if f.is_file():
            st = f.stat()
            key.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.sha256("|".join(key).encode()).hexdigest()[:16]
    return cache_dir() / "onnx" / f"{model_dir.name}-{digest}" / "model.onnx"


def export(model_dir: Path, target: Path) -> None:
    """Export the encoder with mean pooling and normalisation inside the graph (needs torch, once)."""
    import torch
    from transformers import AutoModel

    base = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Pooled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    dummy = torch.ones((1, 8), dtype=torch.long)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        # The tracer warns about Python-side branches on shapes; they are constant for single unpadded
        # sequences, the only input this encoder is ever given (see OnnxQueryEncoder.encode).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pooled(base), (dummy, dummy, torch.zeros_like(dummy)), tmp,
                              input_names=list(_INPUTS), output_names=["embedding"],
                              dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in _INPUTS},
                                            "embedding": {0: "batch"}},
                              opset_version=17, dynamo=False)
        os.replace(tmp, target)  # atomic: a crash mid-export never leaves a truncated model behind
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OnnxQueryEncoder:
    """Embeds short texts (questions) with ONNX Runtime. (Token counting is the embedder's own.)"""

    def __init__(self, model_dir: Path, max_seq_tokens: int):
        self.model_dir = Path(model_dir)
        self.max_seq_tokens = max_seq_tokens
        self._session = None
        self._tokenizer = None

    def load(self) -> "OnnxQueryEncoder":
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = onnx_path(self.model_dir)
        if not path.is_file():
            export(self.model_dir, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(self.max_seq_tokens)
        self._tokenizer = tok
        return self

    def encode(self, text: str) -> np.ndarray:
        enc = self._tokenizer.encode(text)
        feed = {"input_ids": np.asarray([enc.ids], dtype="int64"),
                "attention_mask": np.asarray([enc.attention_mask], dtype="int64"),
                "token_type_ids": np.asarray([enc.type_ids], dtype="int64")}
        return np.asarray(self._session.run(None, feed)[0][0], dtype="float32")
