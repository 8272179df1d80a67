"""Relevance filters: between the retriever and the generator, keep only passages that bear on the question.

Every filter implements ``score(question, passages) -> list[float]`` (higher = more relevant); the
pipeline compares scores with the pack's calibrated threshold. Registered by name in :data:`FILTERS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from app.embedder import Embedder
from app.errors import SlmragError
from app.retrieval import Passage


class RelevanceFilter(Protocol):
    name: str

    def score(self, question: str, passages: Sequence[Passage]) -> list[float]: ...


class NoFilter:
    name = "none"

    def score(self, question: str, passages: Sequence[Passage]) -> list[float]:
        return [1.0] * len(passages)


class CosineFilter:
    """Cosine similarity of question and passage embeddings: the cheap baseline (~1 query embedding)."""

    name = "cosine"

    def __init__(self, embedder: Embedder, snapshot=None):
        self.embedder = embedder
        self.snapshot = snapshot

    def score(self, question: str, passages: Sequence[Passage]) -> list[float]:
        if not passages:
            return []
        q = self.embedder.encode_query(question)
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


FILTERS = ("none", "cosine", "cross_encoder", "slm_judge")


def make_filter(kind: str, *, embedder: Embedder, snapshot=None, generator=None, index_dir: Path | None = None):
    match kind:
        case "none":
            return NoFilter()
        case "cosine":
            return CosineFilter(embedder, snapshot)
        case "cross_encoder":
            from app.filter_models import CrossEncoderFilter

            return CrossEncoderFilter.from_index_dir(index_dir)
        case "slm_judge":
            from app.filter_models import SLMJudgeFilter

            return SLMJudgeFilter(generator)
        case _:
            raise SlmragError(f"Unknown filter '{kind}'. Known: {', '.join(FILTERS)}.")
