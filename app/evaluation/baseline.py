"""The naive RAG baseline that ``slmrag eval`` measures slmrag against, in the same run.

It is LangChain's standard tutorial pattern ("split, embed, FAISS, stuff"):

* ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=150, add_start_index=True)`` from
  ``langchain_text_splitters`` over the same loaded pages as slmrag (:func:`ingest.loaders.load`, so PDF
  chunks keep their page numbers);
* the same embedder object as the pack (MiniLM by default), one vector per chunk, the query embedded
  the same way;
* a plain in-memory ``faiss.IndexFlatIP`` (vectors are L2-normalised, so this ranks exactly like the
  tutorial's default ``IndexFlatL2``), similarity top-k;
* every one of the top ``k`` chunks (LangChain's retriever default ``k=4``) "stuffed" into the
  tutorial's RAG prompt (``rlm/rag-prompt``) and sent to the same generator object as slmrag;
* no BM25, no relevance filter, no token budget beyond not overflowing the model's context window.

``langchain-community`` (where the tutorial's ``FAISS`` vector store wrapper lives) is not a
dependency of slmrag, so the vector store is built here with ``faiss`` directly; the splitting and the
documents are LangChain's own (``langchain_core.documents.Document``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from app.errors import DocumentError

# The prompt of LangChain's RAG tutorial (LangChain Hub "rlm/rag-prompt"), verbatim.
RAG_PROMPT = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
    "answer the question. If you don't know the answer, just say that you don't know. Use three sentences "
    "maximum and keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:"
)

# Tokens kept free in the context window for the chat template around the prompt.
_TEMPLATE_TOKENS = 48


@dataclass
class NaivePassage:
    rank: int
    source: str  # full path of the document
    name: str  # file name
    page: int | None
    text: str
    score: float  # inner product = cosine similarity


@dataclass
class BuildStats:
    documents: int = 0
    pages: int = 0
    chunks: int = 0
    seconds: float = 0.0
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "documents": self.documents, "pages": self.pages, "chunks": self.chunks, "seconds": round(self.seconds, 3),
            "chunks_per_s": round(self.chunks / self.seconds, 2) if self.seconds else None,
            "pages_per_s": round(self.pages / self.seconds, 2) if self.seconds else None,
            "failed": self.failed,
        }


class NaiveRAG:
    """Split -> embed -> FAISS flat index -> top-k -> stuff prompt -> generate."""

    def __init__(self, embedder, generator=None, *, chunk_size: int = 1000, chunk_overlap: int = 150, k: int = 4,
                 n_ctx: int = 2048, max_pages: int = 5000, timeout_s: float = 300.0):
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.embedder = embedder
        self.generator = generator
        self.k = k
        self.n_ctx = n_ctx
        self.max_pages = max_pages
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                                       add_start_index=True)
        self.docs: list = []  # langchain_core.documents.Document
        self.index = None
        self._vectors: np.ndarray | None = None
        self._by_doc: dict[str, np.ndarray] = {}

    def settings(self) -> dict:
        return {"splitter": "langchain_text_splitters.RecursiveCharacterTextSplitter",
                "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap,
                "vector_store": "faiss.IndexFlatIP (in memory)", "k": self.k, "prompt": "rlm/rag-prompt (stuff)",
                "bm25": False, "filter": None}

    # ------------------------------------------------------------------ build
    def build(self, files: list[Path], *, on_file: Callable[[str], None] | None = None,
              on_embed: Callable[[int], None] | None = None,
              on_chunks: Callable[[int], None] | None = None) -> BuildStats:
        """Load, split and embed ``files`` (already expanded, e.g. by ``ingest.ingestor.collect_files``)."""
        import faiss
        from ingest.loaders import load

        t0 = time.perf_counter()
        stats = BuildStats()
        docs = []
        for path in files:
            if on_file:
                on_file(path.name)
            try:
                _, pages = load(path, max_pages=self.max_pages, timeout_s=self.timeout_s)
                n_pages = 0
                for page in pages:
                    n_pages += 1
                    meta = {"source": str(path), "name": path.name, "page": page.page}
                    docs.extend(self.splitter.create_documents([page.text], metadatas=[meta]))
                stats.pages += n_pages
                stats.documents += 1
            except (DocumentError, OSError) as exc:
                stats.failed.append({"path": str(path), "error": " ".join(str(exc).split())})
        self.docs = docs
        if on_embed:
            on_embed(len(docs))
        vectors = self.embedder.encode([d.page_content for d in docs], progress=on_chunks)
        index = faiss.IndexFlatIP(vectors.shape[1] if len(vectors) else self.embedder.dim)
        if len(vectors):
            index.add(vectors)
        self.index = index
        self._vectors = vectors
        by_doc: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            by_doc.setdefault(d.metadata["name"], []).append(i)
            by_doc.setdefault(d.metadata["source"], []).append(i)
        self._by_doc = {key: np.asarray(v, dtype="int64") for key, v in by_doc.items()}
        stats.chunks = len(docs)
        stats.seconds = time.perf_counter() - t0
        return stats

    # ------------------------------------------------------------------ retrieve
    def search(self, question: str, k: int, doc: str | None = None) -> list[NaivePassage]:
        """Similarity top-k; ``doc`` (file name or path) restricts the search to that document, like
        LangChain's ``search_kwargs={"filter": {"source": doc}}``."""
        if self.index is None or not self.docs:
            return []
        q = self.embedder.encode([question])[0]
        if doc is not None:
            positions = self._by_doc.get(doc)
            if positions is None:
                positions = self._by_doc.get(Path(doc).name)
            if positions is None or not len(positions):
                return []
            scores = self._vectors[positions] @ q
            order = np.argsort(-scores, kind="stable")[:k]
            hits = [(int(positions[i]), float(scores[i])) for i in order]
        else:
            scores, ids = self.index.search(q.reshape(1, -1).astype("float32"), min(k, self.index.ntotal))
            hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]
        out = []
        for rank, (i, score) in enumerate(hits, start=1):
            d = self.docs[i]
            out.append(NaivePassage(rank, d.metadata["source"], d.metadata["name"], d.metadata["page"],
                                    d.page_content, score))
        return out

    # ------------------------------------------------------------------ generate
    def messages(self, question: str, passages: list[NaivePassage]) -> list[dict]:
        context = "\n\n".join(p.text for p in passages)  # the tutorial's format_docs
        return [{"role": "user", "content": RAG_PROMPT.format(question=question, context=context)}]

    def stuff(self, question: str, passages: list[NaivePassage], max_tokens: int) -> list[NaivePassage]:
        """The top-k passages, minus trailing ones only if the prompt would overflow the context window
        (llama.cpp refuses such a prompt; LangChain would pass the error on)."""
        chosen = list(passages[: self.k])
        limit = self.n_ctx - max_tokens - _TEMPLATE_TOKENS
        while len(chosen) > 1 and self.generator.count_tokens(self.messages(question, chosen)[0]["content"]) > limit:
            chosen.pop()
        return chosen

    def stream(self, question: str, passages: list[NaivePassage], max_tokens: int) -> Iterator[str]:
        return self.generator.stream(self.messages(question, passages), max_tokens=max_tokens)
