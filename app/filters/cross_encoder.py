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
from app.pair_model import READ_LENGTH
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


def sigmoid(x) -> np.ndarray:
    """1 / (1 + e^-x) in float64: a logit as a probability (the trained filters', selector's and topic gate's scores)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype="float64")))


class CrossEncoderFilter:
    """A sentence-transformers CrossEncoder trained for this pack; scores are sigmoid(logit) in [0, 1]."""

    def __init__(self, model_dir: Path | str, *, batch_size: int = 16, max_length: int = READ_LENGTH):
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length
        self._model = None

    @classmethod
    def from_index_dir(cls, index_dir: Path | str | None, pack_name: str | None = None,
                       max_length: int = READ_LENGTH) -> "CrossEncoderFilter":
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
        return cls(model_dir, max_length=max_length).load()

    def load(self) -> "CrossEncoderFilter":
        from app.models import MODEL_LOAD_LOCK

        with MODEL_LOAD_LOCK:  # transformers' loading (its lazy imports too) is not thread-safe, see app.models
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
            arr = sigmoid(arr)
        return [float(x) for x in arr]


class RelevanceModel:
    """The relevance model trained on labelled rows (:mod:`app.training.relevance`): a one-output pair model
    (:class:`app.pair_model.PairModel`); scores are sigmoid(logit) in [0, 1]."""

    def __init__(self, folder: Path | str, *, batch_size: int = 16, max_length: int = READ_LENGTH,
                 precision: str = "fp32"):
        from app.pair_model import PairModel

        self.folder = Path(folder)
        self._pair = PairModel(folder, batch_size=batch_size, max_length=max_length, precision=precision)

    @classmethod
    def from_folder(cls, folder: Path | str, precision: str = "fp32", max_length: int = READ_LENGTH) -> "RelevanceModel":
        """``precision``: 'fp32' (torch) or 'int8' (ONNX Runtime), see :class:`app.pair_model.PairModel`;
        ``max_length``: the tokens of a pair it reads (``filter.read_tokens``)."""
        from app.pair_model import check_folder

        return cls(check_folder(folder, "filter.model", "slmrag filter train --pack NAME --train DIR; or remove "
                                "filter.model from pack.yaml."), precision=precision, max_length=max_length)

    def load(self) -> "RelevanceModel":
        self._pair.load()
        return self

    def score(self, question: str, passages: Sequence[Passage], *, query_vector=None) -> list[float]:
        if not passages:
            return []
        return self.score_texts(question, [model_passage(p.text, p.name, p.heading) for p in passages])

    def score_texts(self, question: str, texts: list[str]) -> list[float]:
        return [float(x) for x in sigmoid(self._pair.logits(question, list(texts))[:, 0])]
