"""Hybrid retrieval: BM25 (bm25s) + dense (FAISS), fused with weighted reciprocal rank fusion.

Dense search alone misses rare exact terms (drug names, clause numbers, tickers); BM25 alone misses
paraphrases. Fusing *ranks* rather than scores avoids calibrating two incomparable score scales.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np

from app.embedder import Embedder
from app.settings import RetrievalSettings
from app.store import IndexSnapshot

_YEAR = re.compile(r"(?<!\d)(19[5-9]\d|20[0-4]\d)(?!\d)")
_FY = re.compile(r"(?i)\bFY\s?'?(\d{2})\b")


@dataclass
class Passage:
    vid: int
    doc_id: str
    source: str
    name: str
    page: int | None
    text: str
    heading: str
    start: int
    end: int
    score: float = 0.0  # fused retrieval score
    dense: float | None = None  # cosine similarity, when the dense retriever saw it
    bm25: float | None = None
    rank: int = 0
    filter_score: float | None = None
    kept: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} p.{self.page}" if self.page else self.name

    def to_json(self) -> dict:
        return {"rank": self.rank, "source": self.source, "name": self.name, "page": self.page,
                "score": round(float(self.score), 5),
                "filter_score": None if self.filter_score is None else round(float(self.filter_score), 5),
                "kept": self.kept, "heading": self.heading, "text": self.text}


def question_years(question: str) -> set[int]:
    years = {int(y) for y in _YEAR.findall(question)}
    for yy in _FY.findall(question):
        years.add(2000 + int(yy))
    return years


class Retriever:
    def __init__(self, snapshot: IndexSnapshot, embedder: Embedder, settings: RetrievalSettings):
        self.snap = snapshot
        self.embedder = embedder
        self.settings = settings
        self._bm25 = None
        self._lock = threading.Lock()
        by_doc: dict[str, list[int]] = {}
        for c in snapshot.chunks:
            by_doc.setdefault(c.doc_id, []).append(c.vid)
        self._doc_vids = {k: np.asarray(v, dtype="int64") for k, v in by_doc.items()}

    # ------------------------------------------------------------------ BM25
    def _bm25_index(self):
        with self._lock:
            if self._bm25 is None:
                import bm25s

                corpus = [f"{self._title(c.doc_id)} {c.heading} {c.text}" for c in self.snap.chunks]
                tokens = bm25s.tokenize(corpus, stopwords="en", show_progress=False)
                model = bm25s.BM25()
                model.index(tokens, show_progress=False)
                self._bm25 = model
        return self._bm25

    def _title(self, doc_id: str) -> str:
        doc = self.snap.documents.get(doc_id)
        return doc.title if doc else ""

    def bm25_scores(self, question: str) -> np.ndarray:
        import bm25s

        model = self._bm25_index()
        q = bm25s.tokenize([question], stopwords="en", show_progress=False, return_ids=False)[0]
        if not q:
            return np.zeros(len(self.snap.chunks), dtype="float32")
        return np.asarray(model.get_scores(q), dtype="float32")

    # ------------------------------------------------------------------ dense
    def dense_search(self, qvec: np.ndarray, n: int, doc_id: str | None = None) -> list[tuple[int, float]]:
        import faiss

        index = self.snap.faiss_index
        if index is None or index.ntotal == 0:
            return []
        params = None
        if doc_id is not None:
            vids = self._doc_vids.get(doc_id)
            if vids is None:
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(vids))
        scores, ids = index.search(qvec.reshape(1, -1).astype("float32"), min(n, index.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]

    # ------------------------------------------------------------------ fused search
    def search(self, question: str, k: int | None = None, *, doc: str | None = None,
               mode: str | None = None) -> list[Passage]:
        """Top-k passages for a question; ``doc`` restricts to one document (doc_id, path or file name)."""
        s = self.settings
        k = k or s.k
        mode = mode or s.mode
        n = max(s.candidates, k)
        doc_id = self._resolve_doc(doc) if doc else None
        if doc and doc_id is None:
            return []
        positions = self.snap.vid_to_pos
        fused: dict[int, float] = {}
        dense_score: dict[int, float] = {}
        bm25_score: dict[int, float] = {}
        if mode in ("dense", "hybrid"):
            qvec = self.embedder.encode_query(question)
            for rank, (vid, sc) in enumerate(self.dense_search(qvec, n, doc_id)):
                dense_score[vid] = sc
                fused[vid] = fused.get(vid, 0.0) + s.dense_weight / (s.rrf_k + rank + 1)
        if mode in ("bm25", "hybrid"):
            scores = self.bm25_scores(question)
            if doc_id is not None:
                mask = np.full(len(scores), -np.inf, dtype="float32")
                for vid in self._doc_vids.get(doc_id, []):
                    mask[positions[int(vid)]] = 0.0
                scores = scores + mask
            top = np.argsort(-scores)[:n]
            for rank, pos in enumerate(top):
                if not np.isfinite(scores[pos]) or scores[pos] <= 0:
                    break
                vid = self.snap.chunks[pos].vid
                bm25_score[vid] = float(scores[pos])
                fused[vid] = fused.get(vid, 0.0) + s.bm25_weight / (s.rrf_k + rank + 1)
        if s.metadata_boost > 0 and fused:
            self._boost(question, fused)
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])[:k]
        out = []
        for rank, (vid, sc) in enumerate(ranked, start=1):
            c = self.snap.chunks[positions[vid]]
            d = self.snap.documents.get(c.doc_id)
            out.append(Passage(vid=vid, doc_id=c.doc_id, source=d.path if d else "", name=d.name if d else "",
                               page=c.page, text=c.text, heading=c.heading, start=c.start, end=c.end,
                               score=sc, dense=dense_score.get(vid), bm25=bm25_score.get(vid), rank=rank))
        return out

    def _boost(self, question: str, fused: dict[int, float]) -> None:
        """Raise chunks of documents whose metadata (years, name words) the question mentions."""
        years = question_years(question)
        qwords = set(re.findall(r"[a-z][a-z&']{2,}", question.lower()))
        unit = self.settings.metadata_boost / (self.settings.rrf_k + 1)
        positions = self.snap.vid_to_pos
        for vid in list(fused):
            doc = self.snap.documents.get(self.snap.chunks[positions[vid]].doc_id)
            if not doc:
                continue
            info = doc.info or {}
            bonus = 0.0
            if years and set(info.get("years", [])) & years:
                bonus += unit
            if qwords & set(info.get("name_words", [])):
                bonus += unit
            fused[vid] += bonus

    def _resolve_doc(self, doc: str) -> str | None:
        if doc in self.snap.documents:
            return doc
        for d in self.snap.documents.values():
            if doc in (d.path, d.name):
                return d.doc_id
        return None
