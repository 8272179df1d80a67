"""Ingest files into a pack's index: load -> (redact) -> chunk -> embed -> store.

Incremental (an unchanged file is skipped by content hash, a changed one replaces its chunks; an unchanged
file whose chunks were made by other chunking - pack settings or slmrag's rules, see
:func:`ingest.chunking.chunking_identity` - is chunked again), and one
bad file never stops the batch: it is reported with its reason and the rest go in. Work is committed in
generations (see :mod:`app.store`), so a crash loses at most the uncommitted tail, never the index.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app.embedder import Embedder
from app.errors import DocumentError, SlmragError
from app.packs import Pack
from app.store import ChunkRow, DocumentRecord, IndexStore, chunk_hash, doc_id_for, file_sha256
from ingest.chunking import Chunker, chunking_identity
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
    updated: list[str] = field(default_factory=list)  # changed files, and the unchanged ones re-chunked
    rechunked: list[str] = field(default_factory=list)  # unchanged files chunked again: the chunking changed
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
    """A parsed and chunked file, waiting for its vectors."""

    path: Path
    existing: DocumentRecord | None  # the version in the index that this one replaces
    record: DocumentRecord
    rows: list[ChunkRow]
    embed_texts: list[str]
    pages: int


@dataclass
class _Job:
    """A file to parse: checked against the index (size limit, unchanged content) before parsing starts."""

    path: Path
    size: int
    sha: str
    existing: DocumentRecord | None


@dataclass
class _Failed:
    path: Path
    error: str


_DONE = object()  # end of the parsing thread's output


class Ingestor:
    """Ingests into one pack's index. Construct cheaply; the embedder loads on first use.

    Two things run at once during an ingest: a parsing thread (the sandboxed parser process reads each file,
    the thread chunks its pages) and the embedding loop in the calling thread, which embeds the prepared
    documents batch by batch and writes them in file order. Parsing the next files while the current ones are
    embedded keeps both CPU cores busy instead of alternating between the two stages.
    """

    # Prepared documents waiting for the embedding loop, at most: bounds the memory held ahead of it.
    AHEAD = 4

    def __init__(self, pack: Pack, embedder: Embedder | None = None, index_kind: str | None = None):
        self.pack = pack
        self.index_kind = index_kind  # `slmrag ingest --index-kind`: overrides (and is remembered over) index.kind
        self.embedder = embedder or Embedder(pack.config.embedder, pack.path)
        self.store = IndexStore(pack.index_dir)
        self.chunker = Chunker(pack.config.chunking, self.embedder.count_tokens)
        self.chunking = chunking_identity(pack.config.chunking)
        self._worker: ParseWorker | None = None  # the batch's parser process (see ingest.sandbox)

    # ------------------------------------------------------------------ one document
    @property
    def embed_batch(self) -> int:
        """Chunks embedded together: at least 256, in the embedder's batches, so batches run full and sorting
        the group by length leaves each batch little padding."""
        return max(256, 4 * self.pack.config.embedder.batch_size)

    def prepare(self, path: Path, sha: str, size: int, existing: DocumentRecord | None = None) -> PreparedDocument:
        """Parse (in the sandbox) and chunk one file; no embedding."""
        cfg = self.pack.config
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
        if not rows:
            raise DocumentError(f"{path}: no text could be extracted; nothing to index.")
        meta = document_metadata(path.name, info.title, "\n".join(sample))
        meta["chunking"] = self.chunking
        if redactions:
            meta["redactions"] = redactions
        record = DocumentRecord(doc_id, key, path.name, sha, size, info.kind, info.title,
                                info.pages, len(rows), meta, time.time())
        return PreparedDocument(path, existing, record, rows, texts, n_pages)

    # ------------------------------------------------------------------ batch
    def ingest(self, paths: list[Path | str], *, progress: "ProgressSink | None" = None,
               on_wait: Callable[[str], None] | None = None, wait: bool = True) -> IngestSummary:
        t0 = time.perf_counter()
        summary = IngestSummary()
        files, failed = collect_files(paths)
        summary.failed.extend(failed)
        progress = progress or NullProgress()
        progress.start(len(files))
        every = commit_every()
        if files and isolation_enabled():
            self._worker = ParseWorker().start()  # boots while the embedder loads
        try:
            self.embedder.load()
            with self.store.writer(self.embedder.identity, self.embedder.dim, wait=wait, on_wait=on_wait,
                                   settings=self.pack.config.index, kind=self.index_kind) as writer:
                jobs = self._plan(files, writer, summary, progress)
                self._ingest_jobs(jobs, writer, summary, progress, every)
        finally:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
        progress.finish()
        summary.seconds = round(time.perf_counter() - t0, 3)
        return summary

    def _plan(self, files: list[Path], writer, summary: IngestSummary, progress: "ProgressSink") -> list[_Job]:
        """What needs parsing: files over the size limit fail, unchanged ones (same content hash as in the
        index) are skipped - which is also how a killed ingest resumes: what it committed is skipped."""
        max_bytes = int(self.pack.config.ingest.max_file_mb * 1024 * 1024)
        jobs: list[_Job] = []
        for path in files:
            try:
                size = path.stat().st_size
                if size > max_bytes:
                    raise DocumentError(
                        f"{path}: {size / 1e6:.1f} MB is over the limit of {self.pack.config.ingest.max_file_mb:g} MB "
                        "(ingest.max_file_mb in the pack); split the file or raise the limit.")
                sha = file_sha256(path)
            except DocumentError as exc:
                summary.failed.append({"path": str(path), "error": _one_line(exc)})
            except OSError as exc:  # name the file: "[Errno 5] Input/output error" alone says nothing
                summary.failed.append({"path": str(path), "error": _one_line(
                    DocumentError(f"{path}: cannot read the file ({exc.strerror or exc}); skipped."))})
            else:
                existing = writer.document(str(path))
                unchanged = existing is not None and existing.sha256 == sha
                # A document stored before identities were recorded was chunked by version 1 of the rules.
                if unchanged and (existing.info.get("chunking")
                                  or chunking_identity(self.pack.config.chunking, rules=1)) == self.chunking:
                    summary.skipped.append(str(path))  # (collect_files already dropped duplicate paths)
                else:
                    if unchanged:
                        summary.rechunked.append(str(path))
                    jobs.append(_Job(path, size, sha, existing))
                    continue
            progress.advance()
        return jobs

    def _parse_ahead(self, jobs: list[_Job], out: queue.Queue, stop: threading.Event) -> None:
        """The parsing thread: prepares the files in order and hands them (or their failures) to ``out``."""

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    pass
            return False

        for job in jobs:
            if stop.is_set():
                return
            path = job.path
            try:
                item = self.prepare(path, job.sha, job.size, job.existing)
            except DocumentError as exc:
                item = _Failed(path, _one_line(exc))
            except OSError as exc:
                item = _Failed(path, _one_line(DocumentError(f"{path}: cannot read the file ({exc.strerror or exc}); skipped.")))
            except SlmragError as exc:  # not about this file (configuration, index): stops the ingest
                item = exc
            except Exception as exc:  # a parser bug on one file must not sink the batch
                item = _Failed(path, _one_line(DocumentError(f"{path}: could not be processed ({type(exc).__name__}: {exc})")))
            if not put(item) or isinstance(item, SlmragError):
                return
        put(_DONE)

    def _ingest_jobs(self, jobs: list[_Job], writer, summary: IngestSummary, progress: "ProgressSink",
                     every: int) -> None:
        """The embedding loop: takes prepared documents in file order, embeds them in batches of
        :attr:`embed_batch` chunks (small files share a batch, a long one spans several), writes each
        document once all its vectors are in, and commits every ``every`` chunks (so a kill loses at most
        that much work; the rerun skips what was committed)."""
        batch_size = min(self.embed_batch, every)  # a commit never waits for a bigger batch
        if not jobs:
            writer.commit()
            return
        ahead: queue.Queue = queue.Queue(maxsize=self.AHEAD)
        stop = threading.Event()
        parser = threading.Thread(target=self._parse_ahead, args=(jobs, ahead, stop), name="slmrag-parse", daemon=True)
        parser.start()
        waiting: list[PreparedDocument] = []  # in file order; the first ones may be partly embedded
        vectors: list[np.ndarray] = []  # vectors of the waiting documents' first chunks, in order
        n_vectors = 0  # rows in ``vectors``
        queued = 0  # chunks of the waiting documents not embedded yet
        pending = 0  # chunks written since the last commit
        done = False

        def take():
            while True:
                try:
                    return ahead.get(timeout=1.0)
                except queue.Empty:
                    if not parser.is_alive() and ahead.empty():  # it cannot have ended without _DONE, but never hang
                        return _DONE

        def store_ready() -> None:
            """Write the waiting documents whose vectors are all in (joined only then: a long document's
            batches are not copied again and again)."""
            nonlocal waiting, vectors, n_vectors, pending
            if not waiting or n_vectors < len(waiting[0].rows):
                return
            have = np.concatenate(vectors) if len(vectors) > 1 else vectors[0]
            at = 0
            while waiting and len(have) - at >= len(waiting[0].rows):
                prep = waiting.pop(0)
                n = len(prep.rows)
                if prep.existing:  # only now, with the new version fully parsed and embedded, drop the old one
                    writer.remove_document(prep.existing.doc_id)
                writer.add_document(prep.record, prep.rows, have[at:at + n])
                at += n
                (summary.updated if prep.existing else summary.added).append(str(prep.path))
                summary.chunks += prep.record.n_chunks
                summary.pages += prep.pages
                pending += prep.record.n_chunks
                progress.advance()
            vectors = [have[at:]] if at < len(have) else []
            n_vectors = len(have) - at
            if pending >= every:
                writer.commit()
                pending = 0

        try:
            while not done or queued:
                # Take prepared documents until a batch is full (or the parser is done).
                while not done and queued < batch_size:
                    item = take()
                    if item is _DONE:
                        done = True
                    elif isinstance(item, SlmragError):
                        raise item
                    elif isinstance(item, _Failed):
                        summary.failed.append({"path": str(item.path), "error": item.error})
                        progress.advance()
                    else:
                        progress.file(item.path.name)
                        waiting.append(item)
                        queued += len(item.rows)
                if not queued:
                    break
                # One embedding batch: the next chunks of the waiting documents, in order. (A hook that
                # yields the CPU between batches belongs here.)
                texts: list[str] = []
                skip = n_vectors
                for prep in waiting:
                    if skip >= len(prep.rows):
                        skip -= len(prep.rows)
                        continue
                    texts.extend(prep.embed_texts[skip:skip + batch_size - len(texts)])
                    skip = 0
                    if len(texts) >= batch_size:
                        break
                try:
                    batch = self.embedder.encode(texts, progress=progress.chunks)
                except Exception as exc:  # the embedder failing is reported against every file it held
                    for prep in waiting:
                        summary.failed.append({"path": str(prep.path), "error": _one_line(
                            DocumentError(f"{prep.path}: could not be embedded ({type(exc).__name__}: {exc})"))})
                        progress.advance()
                    waiting, vectors, n_vectors, queued = [], [], 0, 0
                    continue
                vectors.append(batch)
                n_vectors += len(batch)
                queued -= len(texts)
                store_ready()
        finally:
            stop.set()
            if parser.is_alive() and self._worker is not None:
                self._worker.close()  # unblocks a parse in progress (the thread sees the worker gone)
            parser.join(timeout=30)
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
