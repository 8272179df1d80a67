"""The topic gate: does a question belong to this pack's field at all?

A passage filter scores passages, and its scores say little about a question from another field when the
pack's documents touch every field: a 10-K mentions patients, lawsuits and contracts, so a medical
question finds finance passages as close as a finance question does (finance's cosine filter abstained on
27 % of other domains' questions). The question alone says more. The gate is a logistic regression on the
question's embedding (the pack's own embedder, the vector retrieval computes anyway, so it costs a dot
product), trained on the pack's questions against other domains' (:mod:`app.training.topic`,
``slmrag filter topic``). A question it scores under ``filter.topic_threshold`` keeps no passage: "not
found", decided by the filter, ``"off_topic": true`` in the answer's filter report.

Stored as ``topic.safetensors`` (the weight vector and bias: numbers only, nothing runs when it loads) and
``topic.json`` (how it was trained: embedder, data hashes, seed, command, cross-validated figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.errors import SlmragError
from app.filters.cross_encoder import sigmoid

WEIGHTS = "topic.safetensors"
INFO = "topic.json"


class TopicGate:
    """A trained topic gate; cheap to construct, :meth:`load` reads the two files."""

    def __init__(self, folder: Path | str, embedder_model: str | None = None):
        self.folder = Path(folder)
        self.embedder_model = embedder_model  # the pack's embedder: the gate must have been trained on its vectors
        self.weight: np.ndarray | None = None
        self.bias = 0.0
        self.info: dict = {}

    def load(self) -> "TopicGate":
        if self.weight is not None:
            return self
        how = ("Train it again with `slmrag filter topic --pack NAME --train DIR --out-of-pack OTHER.jsonl`, "
               "or remove filter.topic_model from pack.yaml.")
        missing = [f for f in (WEIGHTS, INFO) if not (self.folder / f).is_file()]
        if missing:
            raise SlmragError(f"filter.topic_model points to {self.folder}, which holds no topic gate (missing "
                              f"{', '.join(missing)}). {how}")
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(self.folder / WEIGHTS))
            info = json.loads((self.folder / INFO).read_text(encoding="utf-8"))
            weight = np.asarray(tensors["weight"], dtype="float32").reshape(-1)
            bias = float(np.asarray(tensors["bias"]).reshape(-1)[0])
        except Exception as exc:  # a truncated or foreign file: say which, and how to get a good one
            raise SlmragError(f"The topic gate in {self.folder} could not be read ({type(exc).__name__}: {exc}). "
                              f"{how}") from exc
        if not np.all(np.isfinite(weight)) or not np.isfinite(bias):
            raise SlmragError(f"The topic gate in {self.folder} holds non-finite numbers. {how}")
        trained_on = info.get("embedder")
        if self.embedder_model and trained_on and trained_on != self.embedder_model:
            raise SlmragError(f"The topic gate in {self.folder} was trained on the vectors of '{trained_on}', but the "
                              f"pack embeds with '{self.embedder_model}'. {how}")
        self.weight, self.bias, self.info = weight, bias, info
        return self

    def score(self, query_vector: np.ndarray) -> float:
        """P(the question belongs to this pack), from its embedding."""
        self.load()
        v = np.asarray(query_vector, dtype="float32").reshape(-1)
        if v.shape != self.weight.shape:
            raise SlmragError(f"The topic gate in {self.folder} expects {self.weight.shape[0]}-dimensional question "
                              f"vectors, the pack's embedder gives {v.shape[0]}: train the gate again with this "
                              "embedder (`slmrag filter topic`).")
        return float(sigmoid(float(v @ self.weight) + self.bias))
