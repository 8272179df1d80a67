"""The cosine filter: similarity of question and passage embeddings, the cheap baseline."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from app.embedder import Embedder
from app.retrieval import Passage


class CosineFilter:
    """Cosine of the question's and each passage's embedding (vectors are normalised, so a dot product).

    Passage vectors come from the index snapshot when it holds them; only the others are embedded.
    """

    def __init__(self, embedder: Embedder, snapshot=None):
        self.embedder = embedder
        self.snapshot = snapshot

    def score(self, question: str, passages: Sequence[Passage], *, query_vector=None) -> list[float]:
        if not passages:
            return []
        q = self.embedder.encode_query(question) if query_vector is None else query_vector
        vecs = []
        missing = []
        for i, p in enumerate(passages):
            if self.snapshot is not None and self.snapshot.faiss_index is not None and p.vid in self.snapshot.vid_to_pos:
                vecs.append(self.snapshot.vector(p.vid))  # stored vector: no re-embedding
            else:
                vecs.append(None)
                missing.append(i)
        if missing:
            fresh = self.embedder.encode([passages[i].text for i in missing])
            for j, i in enumerate(missing):
                vecs[i] = fresh[j]
        return [float(np.dot(q, v)) for v in vecs]
