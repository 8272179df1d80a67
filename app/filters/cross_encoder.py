"""The cross-encoder filter: a MiniLM cross-encoder trained on the pack's own index, run on CPU.

The model is trained by :mod:`app.training.cross_encoder` and stored with the index, as safetensors, in
``<index_dir>/filter/cross_encoder/`` (:func:`cross_encoder_dir`). It reads each passage as
"document name | heading" + text (:func:`model_passage`), in training and at run time alike.
sentence-transformers and torch are imported only when the model loads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from app.errors import SlmragError, require
from app.retrieval import Passage

CE_SUBDIR = Path("filter") / "cross_encoder"


def cross_encoder_dir(index_dir: Path | str) -> Path:
    return Path(index_dir) / CE_SUBDIR


def normalize(text: str) -> str:
    """Lower-case words separated by single spaces, for "does this text contain that one" checks."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w]+", " ", text.lower())).strip()


def doc_label(name: str) -> str:
    """A file name as words: "MetLife_Inc._-_Remarketing_Agreement.pdf" -> "MetLife Inc. Remarketing Agreement"."""
    base = Path(str(name)).name
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", stem)).strip()


def model_passage(text: str, name: str = "", heading: str = "") -> str:
    """What the cross-encoder reads for a passage: its document's name and section heading, then the text,
    so questions that name a contract or a company can match the document as well as the content."""
    head = heading.strip().splitlines()[-1].strip() if heading and heading.strip() else ""
    if len(re.findall(r"[A-Za-z]{3,}", head)) < 2 or normalize(head) in normalize(text[:200]):
        head = ""
    parts = [p for p in (doc_label(name) if name else "", head) if p]
    return (" | ".join(parts) + "\n" + text) if parts else text


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class CrossEncoderFilter:
    """A sentence-transformers CrossEncoder trained for this pack; scores are sigmoid(logit) in [0, 1]."""

    def __init__(self, model_dir: Path | str, *, batch_size: int = 16, max_length: int = 256):
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length
        self._model = None

    @classmethod
    def from_index_dir(cls, index_dir: Path | str | None, pack_name: str | None = None) -> "CrossEncoderFilter":
        if index_dir is None:
            raise SlmragError("The 'cross_encoder' filter needs the pack's index folder to find its trained model.")
        model_dir = cross_encoder_dir(index_dir)
        if not (model_dir / "model.safetensors").is_file() or not (model_dir / "config.json").is_file():
            name = pack_name or Path(index_dir).name
            raise SlmragError(
                f"The pack's filter is 'cross_encoder' but no trained model is in {model_dir}. Train it from the "
                f"pack's own documents with: slmrag filter train --pack {name}"
                + ("" if pack_name else " (add --index-dir if the index is not the default one)")
                + "; or set filter.kind to 'cosine' in pack.yaml."
            )
        return cls(model_dir).load()

    def load(self) -> "CrossEncoderFilter":
        if self._model is None:
            require("sentence_transformers", "sentence-transformers")
            from sentence_transformers import CrossEncoder

            from app.env import threads

            torch = require("torch")
            torch.set_num_threads(threads())
            self._model = CrossEncoder(str(self.model_dir), local_files_only=True, device="cpu",
                                       max_length=self.max_length)
            self._model.eval()
        return self

    def score(self, question: str, passages: Sequence[Passage], *, query_vector=None) -> list[float]:
        if not passages:
            return []
        return self.score_texts(question, [model_passage(p.text, p.name, p.heading) for p in passages])

    def score_texts(self, question: str, texts: Sequence[str]) -> list[float]:
        self.load()
        scores = self._model.predict([(question, t) for t in texts], batch_size=self.batch_size,
                                     show_progress_bar=False, activation_fn=None, convert_to_numpy=True)
        # predict applies the model's sigmoid already; make sure of the [0, 1] range either way.
        arr = np.asarray(scores, dtype="float64").reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            arr = _sigmoid(arr)
        return [float(x) for x in arr]


HEAD_FILE = "head.safetensors"


def relevance_logits(encoder, head, enc, torch):
    """The relevance model's logit for each (question, passage) pair in ``enc``: MiniLM's token states
    mean-pooled and L2-normalised (how the model was trained to be read), then a linear head."""
    states = encoder(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
    return head(pooled).view(-1)


def base_model_dir() -> Path:
    """The packaged MiniLM, which a labelled relevance model (LoRA + head) is applied to."""
    from app.models import packaged_path

    return Path(packaged_path("minilm"))


class RelevanceModel:
    """The trained LoRA cross-encoder, merged into the packaged MiniLM once loaded; scores in [0, 1]."""

    def __init__(self, folder: Path | str, *, batch_size: int = 16, max_length: int = 256):
        self.folder = Path(folder)
        self.batch_size = batch_size
        self.max_length = max_length
        self._model = None
        self._tok = None

    @classmethod
    def from_folder(cls, folder: Path | str) -> "RelevanceModel":
        folder = Path(folder)
        if not all((folder / f).is_file() for f in ("adapter_model.safetensors", "adapter_config.json", HEAD_FILE)):
            raise SlmragError(
                f"filter.model points to {folder}, which holds no trained relevance model (adapter_model."
                f"safetensors + adapter_config.json + {HEAD_FILE}). Train one with: slmrag filter train --pack NAME --train DIR; "
                "or remove filter.model from pack.yaml.")
        return cls(folder)

    def score(self, question: str, passages: Sequence[Passage], *, query_vector=None) -> list[float]:
        if not passages:
            return []
        return self.score_texts(question, [model_passage(p.text, p.name, p.heading) for p in passages])

    def load(self) -> "RelevanceModel":
        if self._model is None:
            torch = require("torch")
            peft = require("peft")
            transformers = require("transformers")
            from app.env import threads

            torch.set_num_threads(threads())
            base = base_model_dir()
            self._tok = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
            from safetensors.torch import load_file

            model = transformers.AutoModel.from_pretrained(str(base), local_files_only=True)
            model = peft.PeftModel.from_pretrained(model, str(self.folder), is_trainable=False)
            self._model = model.merge_and_unload().eval()  # plain BERT again: no adapter cost per call
            weights = load_file(str(self.folder / HEAD_FILE))
            self._head = torch.nn.Linear(weights["weight"].shape[1], 1)
            self._head.load_state_dict(weights)
            self._head.eval()
        return self

    def score_texts(self, question: str, texts: list[str]) -> list[float]:
        torch = require("torch")
        from app.embedder import native_bf16

        self.load()
        out: list[float] = []
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
        for b in range(0, len(texts), self.batch_size):
            chunk = texts[b:b + self.batch_size]
            enc = self._tok([question] * len(chunk), chunk, truncation="only_second", max_length=self.max_length,
                            padding=True, return_tensors="pt")
            with torch.inference_mode(), autocast:
                logits = relevance_logits(self._model, self._head, enc, torch)
            out.extend(torch.sigmoid(logits).tolist())
        return out
