"""Ingest files into a pack's index: load -> (redact) -> chunk -> embed -> store.

Incremental (an unchanged file is skipped by content hash, a changed one replaces its chunks), and one
bad file never stops the batch: it is reported with its reason and the rest go in. Work is committed in
generations (see :mod:`app.store`), so a crash loses at most the uncommitted tail, never the index.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app.embedder import Embedder
from app.errors import DocumentError, SlmragError
from app.packs import Pack
from app.store import ChunkRow, DocumentRecord, IndexStore, chunk_hash, doc_id_for, file_sha256
from ingest.chunking import Chunker
from ingest.loaders import SUPPORTED_SUFFIXES
from ingest.metadata import document_metadata
from ingest.redact import redact
from ingest.sandbox import ParseWorker, isolation_enabled, load_bounded

COMMIT_EVERY_CHUNKS = 1024


def commit_every() -> int:
    """Chunks between commits: ``SLMRAG_COMMIT_EVERY`` overrides :data:`COMMIT_EVERY_CHUNKS` (read per ingest)."""
    value = os.environ.get("SLMRAG_COMMIT_EVERY")
    return max(1, int(value)) if value else COMMIT_EVERY_CHUNKS


@dataclass
class IngestSummary:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    chunks: int = 0
    pages: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict:
        data = asdict(self)
        data["chunks_per_s"] = round(self.chunks / self.seconds, 2) if self.seconds else None
        return data


def collect_files(paths: list[Path | str]) -> tuple[list[Path], list[dict]]:
    """Expand folders recursively; report missing paths and unreadable entries instead of raising."""
    files: list[Path] = []
    failed: list[dict] = []

    def add(f: Path, shown: str) -> None:
        # Only regular files: a FIFO would block the reader forever, a device never ends. A broken or
        # looping symbolic link is reported rather than crashing resolve() (RuntimeError on a loop).
        try:
            st = f.stat()
            resolved = f.resolve()
        except (OSError, RuntimeError) as exc:
            why = "a symbolic link that loops" if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == 40 else (
                "a broken symbolic link" if f.is_symlink() else (getattr(exc, "strerror", None) or str(exc)))
            failed.append({"path": shown, "error": f"{shown}: cannot read ({why}); skipped."})
            return
        if not stat.S_ISREG(st.st_mode):
            failed.append({"path": shown, "error": f"{shown}: not a regular file (a pipe, socket or device); skipped."})
            return
        files.append(resolved)

    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            why = "a broken symbolic link" if p.is_symlink() else "no such file or folder"
            failed.append({"path": str(raw), "error": f"{raw}: {why}; check the path."})
            continue
        if not p.is_dir():
            add(p, str(raw))
            continue

        def onerror(err: OSError) -> None:
            failed.append({"path": str(err.filename), "error": f"{err.filename}: cannot read folder ({err.strerror})."})

        for root, dirs, names in os.walk(p, onerror=onerror):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                f = Path(root) / name
                if name.startswith(".") or f.suffix.lower() not in SUPPORTED_SUFFIXES:
                    continue
                add(f, str(f))
    seen: set[Path] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, failed


@dataclass
class PreparedDocument:
    record: DocumentRecord
    rows: list[ChunkRow]
    embed_texts: list[str]
    pages: int
    # Vectors of the first chunks, embedded while the parser was still reading later pages (long PDFs);
    # the rest are embedded with other files' chunks in the next shared batch.
    vectors: list = field(default_factory=list)

    @property
    def embedded(self) -> int:
        return sum(len(v) for v in self.vectors)


class Ingestor:
    """Ingests into one pack's index. Construct cheaply; the embedder loads on first use."""

    def __init__(self, pack: Pack, embedder: Embedder | None = None, index_kind: str | None = None):
        self.pack = pack
        self.index_kind = index_kind  # `slmrag ingest --index-kind`: overrides (and is remembered over) index.kind
        self.embedder = embedder or Embedder(pack.config.embedder, pack.path)
        self.store = IndexStore(pack.index_dir)
        self.chunker = Chunker(pack.config.chunking, self.embedder.count_tokens)
        self._worker: ParseWorker | None = None  # the batch's parser process (see ingest.sandbox)

    # ------------------------------------------------------------------ one document
    @property
    def embed_batch(self) -> int:
        """Chunks embedded together: a few of the embedder's batches, so batches run full."""
        return 4 * self.pack.config.embedder.batch_size

    def prepare(self, path: Path, sha: str, size: int, progress: "ProgressSink | None" = None) -> PreparedDocument:
        cfg = self.pack.config
        vectors: list = []
        done = 0  # chunks already embedded
        # Parsed in a worker process, bounded in time (ingest.parse_timeout_s) and memory.
        info, pages = load_bounded(path, max_pages=cfg.ingest.max_pages, timeout_s=cfg.ingest.parse_timeout_s,
                                   worker=self._worker)
        key = str(path)
        doc_id = doc_id_for(key)
        rows: list[ChunkRow] = []
        texts: list[str] = []
        n_pages = 0
        redactions = 0
        sample: list[str] = []
        for page in pages:
            n_pages += 1
            text = page.text
            if cfg.ingest.redact_pii:
                text, n = redact(text)
                redactions += n
            if len(sample) < 3:
                sample.append(text[:4000])
            for chunk in self.chunker.split(text, page.page):
                cid, vid = chunk_hash(key, chunk.page, chunk.start, chunk.text)
                rows.append(ChunkRow(vid, cid, doc_id, len(rows), chunk.page, chunk.start, chunk.end,
                                     chunk.heading, chunk.text))
                texts.append(chunk.embed_text(info.title, cfg.chunking.contextual_header))
            # A long PDF: embed full batches as pages arrive. The parser runs in its own process and keeps
            # reading ahead (into the pipe) meanwhile, so parsing and embedding overlap instead of adding up.
            if len(texts) - done >= self.embed_batch:
                vectors.append(self.embedder.encode(texts[done:done + self.embed_batch],
                                                    progress=progress.chunks if progress else None))
                done += self.embed_batch
        if not rows:
            raise DocumentError(f"{path}: no text could be extracted; nothing to index.")
        meta = document_metadata(path.name, info.title, "\n".join(sample))
        if redactions:
            meta["redactions"] = redactions
        record = DocumentRecord(doc_id, key, path.name, sha, size, info.kind, info.title,
                                info.pages, len(rows), meta, time.time())
        return PreparedDocument(record, rows, texts, n_pages, vectors)

    # ------------------------------------------------------------------ batch
    def ingest(self, paths: list[Path | str], *, progress: "ProgressSink | None" = None,
               on_wait: Callable[[str], None] | None = None, wait: bool = True) -> IngestSummary:
        t0 = time.perf_counter()
        summary = IngestSummary()
        files, failed = collect_files(paths)
        summary.failed.extend(failed)
        progress = progress or NullProgress()
        progress.start(len(files))
        max_bytes = int(self.pack.config.ingest.max_file_mb * 1024 * 1024)
        every = commit_every()
        if files and isolation_enabled():
            self._worker = ParseWorker().start()  # boots while the embedder loads
        try:
            self.embedder.load()
            with self.store.writer(self.embedder.identity, self.embedder.dim, wait=wait, on_wait=on_wait,
                                   settings=self.pack.config.index, kind=self.index_kind) as writer:
                self._ingest_files(files, writer, summary, progress, max_bytes, every)
        finally:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
        progress.finish()
        summary.seconds = round(time.perf_counter() - t0, 3)
        return summary

    def _ingest_files(self, files: list[Path], writer, summary: IngestSummary, progress: "ProgressSink",
                      max_bytes: int, every: int) -> None:
        # Small files (an abstract, a short contract) make a handful of chunks each; embedding them one file
        # at a time wastes most of each batch. Prepared files wait here until a few full batches' worth of
        # chunks is ready, then embed together and go into the index in file order.
        waiting: list[tuple[Path, object, PreparedDocument]] = []
        waiting_chunks = 0
        pending = 0
        flush_at = min(self.embed_batch, every)

        def flush() -> None:
            nonlocal waiting, waiting_chunks, pending
            batch, waiting, waiting_chunks = waiting, [], 0
            if not batch:
                return
            try:
                vectors = self.embedder.encode([t for _, _, prep in batch for t in prep.embed_texts[prep.embedded:]],
                                               progress=progress.chunks)
            except Exception as exc:  # the embedder failing is reported against every file it held
                for path, _, _ in batch:
                    summary.failed.append({"path": str(path), "error": _one_line(
                        DocumentError(f"{path}: could not be embedded ({type(exc).__name__}: {exc})"))})
                return
            at = 0
            for path, existing, prep in batch:
                n = len(prep.embed_texts) - prep.embedded
                doc_vectors = np.concatenate([*prep.vectors, vectors[at:at + n]]) if prep.vectors else vectors[at:at + n]
                # Only now, with the new version fully parsed and embedded, drop the old one.
                if existing:
                    writer.remove_document(existing.doc_id)
                writer.add_document(prep.record, prep.rows, doc_vectors)
                at += n
                (summary.updated if existing else summary.added).append(str(path))
                summary.chunks += prep.record.n_chunks
                summary.pages += prep.pages
                pending += prep.record.n_chunks
            if pending >= every:
                writer.commit()
                pending = 0

        for path in files:
            progress.file(path.name)
            try:
                size = path.stat().st_size
                if size > max_bytes:
                    raise DocumentError(
                        f"{path}: {size / 1e6:.1f} MB is over the limit of {self.pack.config.ingest.max_file_mb:g} MB "
                        "(ingest.max_file_mb in the pack); split the file or raise the limit.")
                sha = file_sha256(path)
                existing = writer.document(str(path))
                if existing and existing.sha256 == sha:  # (collect_files already dropped duplicate paths)
                    summary.skipped.append(str(path))
                    continue
                prepared = self.prepare(path, sha, size, progress)
                waiting.append((path, existing, prepared))
                waiting_chunks += len(prepared.embed_texts) - prepared.embedded
                if waiting_chunks >= flush_at:
                    flush()
            except DocumentError as exc:
                summary.failed.append({"path": str(path), "error": _one_line(exc)})
            except OSError as exc:  # name the file: "[Errno 5] Input/output error" alone says nothing
                summary.failed.append({"path": str(path), "error": _one_line(
                    DocumentError(f"{path}: cannot read the file ({exc.strerror or exc}); skipped."))})
            except SlmragError:
                raise
            except Exception as exc:  # a parser bug on one file must not sink the batch
                summary.failed.append({"path": str(path), "error": _one_line(
                    DocumentError(f"{path}: could not be processed ({type(exc).__name__}: {exc})"))})
            finally:
                progress.advance()
        flush()
        writer.commit()

    def remove(self, paths: list[Path | str]) -> list[str]:
        """Delete documents (by path, or by file name when unambiguous); returns the removed paths."""
        docs = self.store.documents()
        removed: list[str] = []
        targets = []
        for raw in paths:
            full = str(Path(raw).expanduser().resolve())
            matches = [d for d in docs.values() if d.path == full or d.name == str(raw) or d.path.startswith(full + os.sep)]
            if not matches:
                raise DocumentError(f"{raw}: no such document in pack '{self.pack.name}'; see slmrag status --pack {self.pack.name}.")
            targets.extend(matches)
        # No embedder load: removing needs only the stored vectors' size, which the index knows (so a UI
        # answering through ONNX never imports torch to delete a document).
        with self.store.writer(self.embedder.identity, settings=self.pack.config.index) as writer:
            for doc in targets:
                writer.remove_document(doc.doc_id)
                removed.append(doc.path)
            writer.commit()
        return removed


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class ProgressSink:
    def start(self, total_files: int) -> None: ...
    def file(self, name: str) -> None: ...
    def chunks(self, n: int) -> None: ...
    def advance(self) -> None: ...
    def finish(self) -> None: ...


class NullProgress(ProgressSink):
    pass
