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
    opening: str = ""  # the start of the passage's document (where a contract names its parties)

    def to_json(self) -> dict:
        return {"rank": self.rank, "source": self.source, "name": self.name, "page": self.page,
                "score": round(float(self.score), 5),
                "filter_score": None if self.filter_score is None else round(float(self.filter_score), 5),
                "kept": self.kept, "heading": self.heading, "text": self.text} | self.filter_details()

    def filter_details(self) -> dict:
        """What a trained filter's score does not say by itself: how cosine decided this passage
        (``filter.cosine_keep`` / ``cosine_floor``: ``kept_by`` or ``dropped_by`` "cosine", and the ``cosine``;
        the model then did not score it), and the model's own score when ``filter.relative_to_best`` or
        ``filter.rank_prior`` read it in its question (``model_score``; ``filter_score`` is then the one the
        threshold reads); {} otherwise."""
        return {k: self.extra[k] for k in ("kept_by", "dropped_by", "cosine", "model_score") if k in self.extra}


def question_years(question: str) -> set[int]:
    years = {int(y) for y in _YEAR.findall(question)}
    for yy in _FY.findall(question):
        years.add(2000 + int(yy))
    return years


class Retriever:
    def __init__(self, snapshot: IndexSnapshot, embedder: Embedder, settings: RetrievalSettings,
                 expansions: dict[str, str] | None = None):
        self.snap = snapshot
        self.embedder = embedder
        self.settings = settings
        self.expansions = expansions or {}
        # One pattern per phrase, matched on word boundaries ("ebit" must not fire inside "ebitda").
        self._expansion_patterns = [(re.compile(r"(?<![a-z0-9])" + re.escape(k) + r"(?![a-z0-9])"), v)
                                    for k, v in self.expansions.items()]
        self._bm25 = None
        self._lock = threading.Lock()
        by_doc: dict[str, list[int]] = {}
        first: dict[str, tuple[int, int]] = {}  # doc_id -> (ord, position) of its first chunk
        for pos, c in enumerate(snapshot.chunks):
            by_doc.setdefault(c.doc_id, []).append(c.vid)
            if c.doc_id not in first or c.ord < first[c.doc_id][0]:
                first[c.doc_id] = (c.ord, pos)
        self._first_pos = {d: pos for d, (_, pos) in first.items()}
        self._doc_vids = {k: np.asarray(v, dtype="int64") for k, v in by_doc.items()}
        # Documents in a fixed order, and each chunk position's document number in it: per-document
        # maxima and masks over the BM25 score array are then single numpy operations.
        self._doc_order = list(by_doc)
        self._doc_index = {d: i for i, d in enumerate(self._doc_order)}
        self._pos_doc = np.asarray([self._doc_index[c.doc_id] for c in snapshot.chunks], dtype="int64")

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
        vids = None
        if doc_id is not None:
            vids = self._doc_vids.get(doc_id)
            if vids is None:
                return []
        return self.snap.search(qvec, n, vids)

    # ------------------------------------------------------------------ fused search
    def search(self, question: str, k: int | None = None, *, doc: str | None = None,
               mode: str | None = None, query_vector: np.ndarray | None = None) -> list[Passage]:
        """Top-k passages for a question; ``doc`` restricts to one document (doc_id, path or file name).

        ``query_vector``: the question already embedded by the caller (the ask path embeds it once for the
        retriever and the cosine filter). It is used when the search query is the question itself; when
        the pack's expansions add words, the expanded query is embedded here instead."""
        s = self.settings
        k = k or s.k
        mode = mode or s.mode
        n = max(s.candidates, k)
        doc_id = self._resolve_doc(doc) if doc else None
        if doc and doc_id is None:
            return []
        query = self.expand(question)
        qvec = None
        if mode in ("dense", "hybrid"):
            qvec = query_vector if query_vector is not None and query == question else self.embedder.encode_query(query)
        bm25 = self.bm25_scores(query) if mode in ("bm25", "hybrid") else None
        ranked, dense_score, bm25_score = self._fuse(question, qvec, bm25, n, doc_id)
        routed = None
        if doc_id is None and s.doc_first and bm25 is not None:
            routed = self.route(question, bm25)
        if routed is not None:
            # The question points at one document: rank its chunks on their own (a clause or a table
            # competes only with its own document's text, not with every document that shares the
            # question's names), put them first, then let the corpus-wide ranking fill what is left.
            # Within it, the words that name the document ("Best Buy" in BESTBUY_2019_10K) say nothing: every
            # chunk is that document's. Left in the keyword query they favour the chunks that repeat the name
            # ("Best Buy Mobile" store counts) over the balance sheet the question asks about.
            names = (self.snap.documents[routed].info or {}).get("name_words", []) if routed in self.snap.documents else []
            own = _without_names(query, names) if bm25 is not None else query
            in_bm25 = self.bm25_scores(own) if own != query and own.strip() else bm25
            in_doc, d_score, b_score = self._fuse(question, qvec, in_bm25, n, routed)
            first = in_doc[:k]
            taken = {vid for vid, _ in first}
            ranked = first + [kv for kv in ranked if kv[0] not in taken]
            dense_score = {**dense_score, **d_score}
            bm25_score = {**bm25_score, **b_score}
        out = []
        for rank, (vid, sc) in enumerate(ranked[:k], start=1):
            p = self._passage(vid)
            p.score, p.dense, p.bm25, p.rank = sc, dense_score.get(vid), bm25_score.get(vid), rank
            p.extra = {"routed": True} if routed is not None and p.doc_id == routed else {}
            out.append(p)
        return out

    def _passage(self, vid: int) -> Passage:
        c = self.snap.chunks[self.snap.vid_to_pos[vid]]
        d = self.snap.documents.get(c.doc_id)
        return Passage(vid=vid, doc_id=c.doc_id, source=d.path if d else "", name=d.name if d else "",
                       page=c.page, text=c.text, heading=c.heading, start=c.start, end=c.end,
                       opening=self.snap.chunks[self._first_pos[c.doc_id]].text[:2000])

    def same_table(self, passages: list[Passage], limit: int = 4) -> list[Passage]:
        """The other chunks of the tables ``passages`` hold: a statement the chunker split keeps its title line
        at the head of every chunk, so a chunk of the same document and page that opens with the same line is
        another part of the same table (the upper half with revenue when the lower half with net income was
        retrieved). At most ``limit`` per passage, in document order; none already among ``passages``."""
        have = {p.vid for p in passages}
        out: list[Passage] = []
        for p in passages:
            title = _first_line(p.text)
            if not title or p.doc_id not in self._doc_vids:
                continue
            found = []
            for vid in self._doc_vids[p.doc_id]:
                c = self.snap.chunks[self.snap.vid_to_pos[int(vid)]]
                if int(vid) not in have and c.page == p.page and _first_line(c.text) == title:
                    found.append((c.ord, int(vid)))
            for _, vid in sorted(found)[:limit]:
                have.add(vid)
                out.append(self._passage(vid))
        return out

    def expand(self, question: str) -> str:
        """The search query: the question plus the pack's expansion words for each phrase it contains."""
        if not self._expansion_patterns:
            return question
        low = " ".join(question.lower().split())
        extra = [words for pattern, words in self._expansion_patterns if pattern.search(low)]
        return f"{question} {' '.join(extra)}" if extra else question

    def _fuse(self, question: str, qvec: np.ndarray | None, bm25: np.ndarray | None, n: int,
              doc_id: str | None) -> tuple[list[tuple[int, float]], dict[int, float], dict[int, float]]:
        """Weighted reciprocal rank fusion of the dense and BM25 rankings (within ``doc_id`` if given)."""
        s = self.settings
        fused: dict[int, float] = {}
        dense_score: dict[int, float] = {}
        bm25_score: dict[int, float] = {}
        if qvec is not None:
            for rank, (vid, sc) in enumerate(self.dense_search(qvec, n, doc_id)):
                dense_score[vid] = sc
                fused[vid] = fused.get(vid, 0.0) + s.dense_weight / (s.rrf_k + rank + 1)
        if bm25 is not None:
            scores = bm25
            if doc_id is not None:
                scores = np.where(self._pos_doc == self._doc_index.get(doc_id, -1), scores, -np.inf)
            top = np.argsort(-scores)[:n]
            for rank, pos in enumerate(top):
                if not np.isfinite(scores[pos]) or scores[pos] <= 0:
                    break
                vid = self.snap.chunks[pos].vid
                bm25_score[vid] = float(scores[pos])
                fused[vid] = fused.get(vid, 0.0) + s.bm25_weight / (s.rrf_k + rank + 1)
        if s.metadata_boost > 0 and fused and doc_id is None:
            self._boost(_QuestionMeta.of(question), fused)
        if s.table_row_boost > 0 and fused:
            self._row_boost(question, fused)
        return sorted(fused.items(), key=lambda kv: -kv[1]), dense_score, bm25_score

    def _row_boost(self, question: str, fused: dict[int, float]) -> None:
        """Raise chunks with a table row whose label the question names ("What was the service cost in
        2019?" -> the row "| Service cost | 50 | ..."): figures live in rows, and the prose around a table
        often repeats the question's words without the number. The longest matching label counts, so
        "Total operating expenses" beats "Total"."""
        q = f" {_norm(question)} "
        unit = self.settings.table_row_boost / (self.settings.rrf_k + 1)
        positions = self.snap.vid_to_pos
        for vid in list(fused):
            best = max((len(label) for label in _row_labels(self.snap.chunks[positions[vid]].text)
                        if f" {label} " in q), default=0)
            if best:
                # A rank-1 RRF unit, plus a little per character so the most specific label leads.
                fused[vid] += unit * (1.0 + min(best, 60) / 120)

    # ------------------------------------------------------------------ documents first
    def doc_scores(self, question: str, bm25: np.ndarray) -> dict[str, float]:
        """Each document's score for a question: its best chunk's BM25 score relative to the best
        document's (so 1.0 leads), plus ``0.25 * metadata_boost`` for each kind of metadata the question
        names (a year the document is about; a word of its name)."""
        if not len(bm25):
            return {}
        best = np.full(len(self._doc_order), 0.0, dtype="float32")
        np.maximum.at(best, self._pos_doc, np.maximum(bm25, 0.0))
        top = float(best.max())
        if top <= 0:
            return {}
        scores = {doc_id: float(best[i]) / top for i, doc_id in enumerate(self._doc_order)}
        if self.settings.metadata_boost > 0:
            unit = 0.25 * self.settings.metadata_boost
            qmeta = _QuestionMeta.of(question)
            for doc_id in scores:
                scores[doc_id] += unit * self._metadata_matches(qmeta, doc_id)
        return scores

    def route(self, question: str, bm25: np.ndarray) -> str | None:
        """The document the question clearly points at, or None when no document leads by ``doc_margin``."""
        scores = self.doc_scores(question, bm25)
        if not scores:
            return None
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        if len(ranked) == 1:
            return ranked[0][0]
        (d1, s1), (_, s2) = ranked[0], ranked[1]
        return d1 if s1 > 0 and s1 >= self.settings.doc_margin * s2 else None

    def _metadata_matches(self, q: "_QuestionMeta", doc_id: str) -> int:
        """How many kinds of document metadata the question names: a year the document is about, a word
        of its name (also written without spaces: "Best Buy" names BESTBUY_2023_10K.pdf)."""
        doc = self.snap.documents.get(doc_id)
        if not doc:
            return 0
        info = doc.info or {}
        matches = int(bool(q.years and set(info.get("years", [])) & q.years))
        names = info.get("name_words", [])
        if q.words & set(names) or any(len(w) >= 5 and w in q.compact for w in names):
            matches += 1
        return matches

    def _boost(self, qmeta: "_QuestionMeta", fused: dict[int, float]) -> None:
        """Raise chunks of documents whose metadata (years, name words) the question mentions."""
        unit = self.settings.metadata_boost / (self.settings.rrf_k + 1)
        positions = self.snap.vid_to_pos
        cache: dict[str, int] = {}
        for vid in list(fused):
            doc_id = self.snap.chunks[positions[vid]].doc_id
            if doc_id not in cache:
                cache[doc_id] = self._metadata_matches(qmeta, doc_id)
            fused[vid] += unit * cache[doc_id]

    def _resolve_doc(self, doc: str) -> str | None:
        if doc in self.snap.documents:
            return doc
        for d in self.snap.documents.values():
            if doc in (d.path, d.name):
                return d.doc_id
        return None


@dataclass(frozen=True)
class _QuestionMeta:
    """What metadata matching reads from a question, parsed once per search (not once per document)."""

    years: set[int]
    words: set[str]
    compact: str  # lowercase letters and digits only: "Best Buy's" -> "bestbuys"

    @classmethod
    def of(cls, question: str) -> "_QuestionMeta":
        low = question.lower()
        return cls(question_years(question), set(re.findall(r"[a-z][a-z&']{2,}", low)), re.sub(r"[^a-z0-9]", "", low))


def _without_names(query: str, names: list[str]) -> str:
    """``query``'s words without those that name a document whose name words are ``names``: a name word
    itself, or a run of up to three words that spell one written together ("Best Buy's" for "bestbuy")."""
    tokens = re.findall(r"[A-Za-z0-9&']+", query)
    low = [re.sub(r"'s?$", "", t.lower()) for t in tokens]
    named = set(names)
    drop: set[int] = {i for i, t in enumerate(low) if t in named}
    for i in range(len(low)):
        for j in range(i + 2, min(i + 3, len(low)) + 1):
            joined = "".join(low[i:j])
            if len(joined) >= 5 and joined in named:
                drop.update(range(i, j))
    return " ".join(t for i, t in enumerate(tokens) if i not in drop)


def _first_line(text: str) -> str:
    """A chunk's first non-empty line, spaces normalised; "" when it is short enough to be a figure or a
    fragment rather than a title (a table's title names the statement)."""
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            return line if len(line) >= 12 and re.search(r"[A-Za-z]{4}", line) else ""
    return ""


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9%]+", " ", text.lower()).split())


def _row_labels(text: str) -> list[str]:
    """Normalised first cells of the Markdown-style table rows in a chunk ('| Service cost | $ 50 |')."""
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        first = line.strip("|").split("|", 1)[0]
        first = re.sub(r"\(\w{1,3}\)", " ", first)  # footnote markers: "Purchase obligations (2)"
        label = _norm(first)
        if len(label) >= 4 and re.search(r"[a-z]", label):
            labels.append(label)
    return labels
