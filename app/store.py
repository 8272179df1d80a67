"""The pack index: FAISS's own index file plus a SQLite metadata store. No pickle anywhere.

Layout of ``indexes/<pack>/``::

    meta.sqlite            documents, chunks (text + metadata), the current generation number, and the
                           dense index's kind and parameters (index_kind, index_params)
    vectors.<gen>.faiss    the FAISS index, written with faiss.write_index: IndexIDMap2(IndexFlatIP) for
                           kind flat, IndexIDMap2(IndexHNSWFlat) for hnsw, IndexIVFPQ for ivfpq
    vectors.<gen>.f16.npy  ivfpq only: the exact vectors (float16) and their ids, for re-ranking
    vectors.<gen>.ids.npy  (see app.vector_index)
    .lock                  advisory lock held by a writer

Crash safety: a writer builds the next generation's files under temporary names, fsyncs them,
renames them into place, and only then commits the SQLite transaction that changes the chunk rows *and*
the generation number together. A crash before that commit leaves the previous generation current
(SQLite rolls back, the orphan file is swept later); a crash after it leaves the new one complete. The
previous generation's file is kept one round so a reader that has just read the old number can still
open it. FAISS ids are the first 63 bits of the chunk's content hash, so the FAISS index and the chunk
table always agree on ids, and re-ingesting the same text yields the same ids.

This module is the only code that knows the schema: pack archives (:mod:`app.pack_archive`) export,
vet and relink an index through :meth:`IndexStore.copy_to`, :meth:`IndexStore.validate_foreign` and
:meth:`IndexStore.relink_documents`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from app import vector_index
from app.errors import IndexDamaged
from app.settings import IndexSettings
from app.vector_index import DenseIndex, DenseWriter

SCHEMA_VERSION = 1
DB_NAME = "meta.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    pages INTEGER,
    n_chunks INTEGER NOT NULL,
    info_json TEXT NOT NULL DEFAULT '{}',
    ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    vid INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    ord INTEGER NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""
# What _SCHEMA creates; a foreign meta.sqlite with anything else (triggers, views...) is refused.
_SCHEMA_OBJECTS = {("table", "meta"), ("table", "documents"), ("table", "chunks"), ("index", "chunks_doc")}
_SCHEMA_TABLES = {o for o in _SCHEMA_OBJECTS if o[0] == "table"}


def chunk_hash(doc_key: str, page: int | None, start: int, text: str) -> tuple[str, int]:
    digest = hashlib.sha256(f"{doc_key}\x00{page}\x00{start}\x00{text}".encode("utf-8")).digest()
    # FAISS ids are signed int64: keep 63 bits so they are never negative (-1 means "no result").
    return digest[:16].hex(), int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def doc_id_for(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class DocumentRecord:
    doc_id: str
    path: str
    name: str
    sha256: str
    size: int
    kind: str
    title: str
    pages: int | None
    n_chunks: int
    info: dict
    ingested_at: float


@dataclass
class ChunkRow:
    vid: int
    chunk_id: str
    doc_id: str
    ord: int
    page: int | None
    start: int
    end: int
    heading: str
    text: str


@dataclass
class IndexSnapshot:
    """A consistent, read-only view of an index: the FAISS index and the rows it was committed with."""

    path: Path
    generation: int
    embedder: str
    faiss_index: object | None
    chunks: list[ChunkRow]
    documents: dict[str, DocumentRecord]
    last_ingest: float | None
    dense: DenseIndex | None = None
    settings: IndexSettings | None = None  # search knobs (nprobe, efSearch, rerank); None: the defaults
    vid_to_pos: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vid_to_pos = {c.vid: i for i, c in enumerate(self.chunks)}

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    @property
    def kind(self) -> str:
        return self.dense.kind if self.dense is not None else "flat"

    def vector(self, vid: int) -> np.ndarray:
        return self.dense.vector(vid)

    def search(self, qvec: np.ndarray, n: int, vids: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``n`` nearest chunks to one query vector as (vid, inner product), restricted to ``vids``."""
        if self.dense is None or self.dense.ntotal == 0:
            return []
        scores, ids = self.dense.search(qvec, n, vids=vids, settings=self.settings)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _connect(db: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, isolation_level=None)
    else:
        conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class IndexStore:
    """Opens, reads and writes one pack index folder."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    def exists(self) -> bool:
        return self.db_path.is_file()

    def faiss_file(self, generation: int) -> Path:
        return self.path / f"vectors.{generation}.faiss"

    def generation_files(self, generation: int, kind: str) -> list[Path]:
        """Every file of one generation (the FAISS file first; ivfpq adds its exact vectors)."""
        return vector_index.files_for(self.path, generation, kind) if generation else []

    # ------------------------------------------------------------------ reading
    def snapshot(self, retries: int = 5, settings: IndexSettings | None = None) -> IndexSnapshot:
        """The current generation, read-only and memory-mapped where FAISS allows; ``settings`` are the
        pack's ``index`` block (its search knobs apply to this snapshot's searches)."""
        if not self.exists():
            raise IndexDamaged(
                f"No index at {self.path}. Build it with: slmrag ingest PATH --pack NAME "
                "(or start the UI, which ingests the pack's starter corpus)."
            )
        last_exc: Exception | None = None
        for _ in range(retries):
            try:
                return self._read_snapshot(settings)
            except FileNotFoundError as exc:  # a writer swept the generation we read; read again
                last_exc = exc
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:  # reliability fix: see _damaged
                raise self._damaged(exc) from exc
        raise IndexDamaged(f"{self.path}: the index's vector file is missing ({last_exc}); run slmrag status --check.")

    def _read_snapshot(self, settings: IndexSettings | None) -> IndexSnapshot:
        conn = _connect(self.db_path, readonly=True)
        try:
            conn.execute("BEGIN")  # one read transaction: rows and generation from the same commit
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            version = int(meta.get("schema_version", SCHEMA_VERSION))
            if version > SCHEMA_VERSION:
                raise IndexDamaged(f"{self.path} was written by a newer slmrag (schema {version}); upgrade slmrag.")
            generation = int(meta.get("generation", 0))
            dense = None
            if generation > 0:
                kind = vector_index.check_kind(self.path, meta.get("index_kind", "flat"))
                dense = vector_index.read(self.path, generation, kind,
                                          vector_index.parse_params(self.path, meta.get("index_params")))
            chunks = [ChunkRow(*row) for row in conn.execute(
                'SELECT vid, chunk_id, doc_id, ord, page, start, "end", heading, text FROM chunks ORDER BY doc_id, ord'
            )]
            documents = {r[0]: _doc_from_row(r) for r in conn.execute(
                "SELECT doc_id, path, name, sha256, size, kind, title, pages, n_chunks, info_json, ingested_at FROM documents"
            )}
            conn.execute("COMMIT")
        finally:
            conn.close()
        last = meta.get("last_ingest")
        return IndexSnapshot(self.path, generation, meta.get("embedder", ""), dense.index if dense else None, chunks,
                             documents, float(last) if last else None, dense, settings)

    def documents(self) -> dict[str, DocumentRecord]:
        if not self.exists():
            return {}
        conn = _connect(self.db_path, readonly=True)
        try:
            return {r[0]: _doc_from_row(r) for r in conn.execute(
                "SELECT doc_id, path, name, sha256, size, kind, title, pages, n_chunks, info_json, ingested_at FROM documents"
            )}
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc
        finally:
            conn.close()

    def generation(self) -> int:
        return int(self.meta().get("generation", 0))

    def meta(self) -> dict[str, str]:
        """The meta table (generation, embedder, dim, index_kind, index_params...); empty without an index."""
        if not self.exists():
            return {}
        conn = _connect(self.db_path, readonly=True)
        try:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc
        finally:
            conn.close()

    def index_info(self) -> dict:
        """What `slmrag status` reports about the dense index: kind, parameters, vectors, files and bytes."""
        meta = self.meta()
        generation = int(meta.get("generation", 0))
        kind = meta.get("index_kind", "flat")
        files = [f for f in self.generation_files(generation, kind) if f.exists()] if kind in vector_index.KINDS else []
        info = {"kind": kind, "params": vector_index.parse_params(self.path, meta.get("index_params")),
                "files": [f.name for f in files], "bytes": sum(f.stat().st_size for f in files)}
        if meta.get("index_request"):
            info["requested"] = meta["index_request"]
        return info

    def _damaged(self, exc: Exception) -> IndexDamaged:
        # Reliability fix: a damaged or foreign meta.sqlite ("file is not a database") is reported as an
        # IndexDamaged the CLI prints, instead of a sqlite3 traceback.
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return IndexDamaged(f"{self.db_path} is busy ({exc}); try again in a moment.")
        return IndexDamaged(f"{self.db_path}: the metadata store cannot be read ({exc}); the index is damaged - "
                            "delete the folder and ingest again.")

    def check(self) -> list[str]:
        """Return a list of problems (empty when the FAISS file and the metadata agree)."""
        problems: list[str] = []
        try:
            snap = self.snapshot(retries=2)
        except Exception as exc:  # report, don't crash: this is the diagnostic command
            return [f"cannot load index: {exc}"]
        vids = {c.vid for c in snap.chunks}
        if snap.dense is None:
            if vids:
                problems.append(f"{len(vids)} chunk rows but no vector file (generation 0)")
        else:
            ids = set(snap.dense.ids().tolist())
            if snap.dense.ntotal != len(vids):
                problems.append(f"vector count {snap.dense.ntotal} != chunk rows {len(vids)}")
            if ids != vids:
                problems.append(f"{len(ids - vids)} vector ids without rows, {len(vids - ids)} rows without vectors")
            if snap.dense.exact_ids is not None and set(snap.dense.exact_ids.tolist()) != vids:
                problems.append("the exact (float16) vectors do not cover the same ids as the chunk rows")
        per_doc: dict[str, int] = {}
        for c in snap.chunks:
            per_doc[c.doc_id] = per_doc.get(c.doc_id, 0) + 1
        for doc in snap.documents.values():
            if per_doc.get(doc.doc_id, 0) != doc.n_chunks:
                problems.append(f"{doc.name}: recorded {doc.n_chunks} chunks, found {per_doc.get(doc.doc_id, 0)}")
        orphans = set(per_doc) - set(snap.documents)
        if orphans:
            problems.append(f"{len(orphans)} chunk group(s) belong to no document")
        return problems

    # ------------------------------------------------------------------ copies (pack archives)
    def copy_to(self, folder: Path, retries: int = 5) -> tuple[int, str]:
        """Copy the current generation into ``folder`` (an empty one); returns (generation, embedder).

        meta.sqlite is copied through SQLite's backup API (so nothing waiting in the WAL is lost) as one
        self-contained file, then the vector files of the generation (and kind) that copy records.
        """
        copy = IndexStore(folder)
        for _ in range(retries):
            src = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
            dst = sqlite3.connect(str(copy.db_path))
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
                meta = dict(dst.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'embedder', 'index_kind')"))
            finally:
                dst.close()
                src.close()
            generation, embedder = int(meta.get("generation", 0)), meta.get("embedder", "")
            if generation == 0:
                return generation, embedder
            kind = meta.get("index_kind", "flat")
            try:
                for f_src, f_dst in zip(self.generation_files(generation, kind), copy.generation_files(generation, kind)):
                    shutil.copyfile(f_src, f_dst)
                return generation, embedder
            except FileNotFoundError:  # a writer committed and swept meanwhile: copy again
                for f in [copy.db_path, *copy.generation_files(generation, kind)]:
                    f.unlink(missing_ok=True)
                time.sleep(0.1)
        raise IndexDamaged(f"{self.path}: the index kept changing while it was exported; try again when no "
                           "ingest runs.")

    def validate_foreign(self) -> tuple[int, str, str]:
        """Check a meta.sqlite that comes from elsewhere (a pack archive) before anything else opens it:
        exactly this schema's objects (no trigger or view that would run on a write), SQLite's quick_check,
        a numeric generation and a known index kind. Returns (generation, embedder, kind).

        Raises :class:`IndexDamaged` whose message is the reason alone; the caller says where the file
        came from (the archive member).
        """
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
            try:
                conn.execute("PRAGMA trusted_schema=OFF")
                objects = {(t, n) for t, n in conn.execute("SELECT type, name FROM sqlite_master")
                           if not n.startswith("sqlite_autoindex_")}
                extra = objects - _SCHEMA_OBJECTS
                if extra:
                    raise IndexDamaged("unexpected database objects " + ", ".join(f"{t} {n}" for t, n in sorted(extra)))
                if not _SCHEMA_TABLES <= objects:
                    raise IndexDamaged("not a slmrag index (tables missing)")
                ok = conn.execute("PRAGMA quick_check").fetchone()[0]
                if ok != "ok":
                    raise IndexDamaged(f"database is damaged ({ok})")
                meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'embedder', 'index_kind')"))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise IndexDamaged(f"not a readable SQLite index ({exc})") from exc
        try:
            generation = int(meta.get("generation", 0))
        except ValueError as exc:
            raise IndexDamaged("generation is not a number") from exc
        kind = str(meta.get("index_kind", "flat"))
        if kind not in vector_index.KINDS:
            raise IndexDamaged(f"unknown vector index kind '{kind}' (known: {', '.join(vector_index.KINDS)})")
        return generation, str(meta.get("embedder", "")), kind

    def relink_documents(self, new_paths: dict[tuple[str, str], Path]) -> int:
        """Point documents at new copies of their files, found by (file name, sha256) in ``new_paths``;
        returns how many moved. All or nothing: if two documents would share a path, none moves."""
        conn = sqlite3.connect(str(self.db_path), isolation_level=None)
        try:
            conn.execute("PRAGMA trusted_schema=OFF")
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute("SELECT doc_id, name, sha256 FROM documents").fetchall()
            n = 0
            for doc_id, name, sha in rows:
                target = new_paths.get((name, sha))
                if target is not None:
                    conn.execute("UPDATE documents SET path=? WHERE doc_id=?", (str(target), doc_id))
                    n += 1
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=DELETE")
            return n
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK")
            return 0
        finally:
            conn.close()

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writer(self, embedder_identity: str, dim: int | None = None, *, wait: bool = True,
               on_wait: Callable[[str], None] | None = None, settings: IndexSettings | None = None,
               kind: str | None = None) -> Iterator["IndexWriter"]:
        """Lock the index for writing. ``dim`` is the embedder's vector size; None takes it from the
        stored vectors, so removing documents needs no embedder (and never loads torch). ``settings`` is
        the pack's ``index`` block; ``kind`` an explicit kind asked for this index (``--index-kind``:
        remembered, so later writes keep it; 'auto' forgets it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock_fh = (self.path / ".lock").open("a+")
        try:
            try:
                fcntl.flock(lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(lock_fh)
                msg = f"waiting for another slmrag process{holder} writing {self.path} to finish..."
                if not wait:
                    raise IndexDamaged(f"{self.path} is being written by another slmrag process{holder}; try again later.")
                if on_wait:
                    on_wait(msg)
                fcntl.flock(lock_fh, fcntl.LOCK_EX)
            lock_fh.seek(0)
            lock_fh.truncate()
            lock_fh.write(str(os.getpid()))
            lock_fh.flush()
            try:
                writer = IndexWriter(self, embedder_identity, dim, settings, kind)
            except sqlite3.DatabaseError as exc:  # reliability fix: see _damaged
                raise self._damaged(exc) from exc
            try:
                yield writer
            finally:
                writer.close()
        finally:
            fcntl.flock(lock_fh, fcntl.LOCK_UN)
            lock_fh.close()


def _lock_holder(fh) -> str:
    fh.seek(0)
    pid = fh.read().strip()
    return f" (pid {pid})" if pid else ""


def _doc_from_row(r) -> DocumentRecord:
    return DocumentRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9] or "{}"), r[10])


class IndexWriter:
    """Holds the write lock and an open SQLite transaction; :meth:`commit` publishes a new generation."""

    def __init__(self, store: IndexStore, embedder_identity: str, dim: int | None,
                 settings: IndexSettings | None = None, kind: str | None = None):
        self.store = store
        self.conn = _connect(store.db_path)
        self.conn.executescript(_SCHEMA)
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        stored = meta.get("embedder")
        if stored and stored != embedder_identity:
            self.conn.close()
            raise IndexDamaged(
                f"{store.path} was built with the embedder '{stored}', but the pack now uses "
                f"'{embedder_identity}'. Vectors from different embedders cannot be mixed: delete the folder "
                "and ingest again."
            )
        self.generation = int(meta.get("generation", 0))
        if kind is not None and kind not in ("auto", *vector_index.KINDS):
            self.conn.close()
            raise ValueError(f"unknown index kind '{kind}' (use auto, {', '.join(vector_index.KINDS)})")
        self.settings = settings or IndexSettings()
        # An explicit kind asked for now is remembered for later writes; 'auto' forgets an earlier one.
        self.requested = (None if kind == "auto" else kind) if kind is not None else (meta.get("index_request") or None)
        if self.generation == 0 and dim is None:  # no vectors yet, so nothing to take the size from
            self.conn.close()
            raise ValueError("an index without vectors needs the embedder's dim")
        try:
            self.dense = DenseWriter(store.path, self.generation, vector_index.check_kind(
                store.path, meta.get("index_kind", "flat")), vector_index.parse_params(store.path, meta.get("index_params")),
                dim or 0)
        except (FileNotFoundError, IndexDamaged) as exc:
            self.conn.close()
            if isinstance(exc, IndexDamaged):
                raise
            raise IndexDamaged(f"{store.path}: the current vector file {exc} is missing; the index is damaged - "
                               "delete the folder and ingest again.") from exc
        if dim is not None and self.dense.d != dim:
            self.conn.close()
            raise IndexDamaged(f"{store.path}: stored vectors have {self.dense.d} dimensions, the embedder gives {dim}.")
        self.dim = self.dense.d
        self.conn.execute("BEGIN IMMEDIATE")
        self._meta_set("schema_version", str(SCHEMA_VERSION))
        self._meta_set("embedder", embedder_identity)
        self._meta_set("dim", str(self.dim))
        if kind is not None:
            self._meta_set("index_request", self.requested or "")
        # A kind change (a flag, an edited pack) is a change to write even when no document changes.
        # (so is a newly asked kind, so that it is remembered even when the index cannot take it yet).
        self.dirty = self.generation > 0 and (self._target_kind() != self.dense.kind
                                              or (kind is not None and self.requested != (meta.get("index_request") or None)))

    def _target_kind(self) -> str:
        return vector_index.decide_kind(self.dense.kind, self.dense.ntotal, self.settings, self.requested)

    @property
    def index(self):
        """The FAISS index being written (flat and hnsw: with changes so far; ivfpq: changes wait for commit)."""
        return self.dense.index

    def _meta_set(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                          (key, value))

    def document(self, path: str) -> DocumentRecord | None:
        row = self.conn.execute(
            "SELECT doc_id, path, name, sha256, size, kind, title, pages, n_chunks, info_json, ingested_at "
            "FROM documents WHERE path=?", (path,)).fetchone()
        return _doc_from_row(row) if row else None

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """All-or-nothing SQL for one document (reliability fix): if a statement fails half-way (say a
        text the driver cannot encode), the rows written so far are rolled back instead of being
        committed later with no vectors. FAISS is changed last, only after the SQL succeeded."""
        self.conn.execute("SAVEPOINT doc")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO doc")
            self.conn.execute("RELEASE doc")
            raise
        self.conn.execute("RELEASE doc")

    def remove_document(self, doc_id: str) -> int:
        with self._atomic():
            vids = [r[0] for r in self.conn.execute("SELECT vid FROM chunks WHERE doc_id=?", (doc_id,))]
            self.conn.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
            self.conn.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
            if vids:
                self.dense.remove(vids)
        self.dirty = True
        return len(vids)

    def add_document(self, doc: DocumentRecord, chunks: list[ChunkRow], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        # Identical text at the same place yields the same id; keep the first to stay consistent.
        seen: set[int] = set()
        keep = []
        for i, c in enumerate(chunks):
            if c.vid in seen:
                continue
            seen.add(c.vid)
            keep.append(i)
        chunks = [chunks[i] for i in keep]
        vectors = vectors[keep]
        doc.n_chunks = len(chunks)
        with self._atomic():
            self.conn.execute(
                "INSERT INTO documents(doc_id, path, name, sha256, size, kind, title, pages, n_chunks, info_json, ingested_at) "
                "VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                (doc.doc_id, doc.path, doc.name, doc.sha256, doc.size, doc.kind, doc.title, doc.pages, doc.n_chunks,
                 json.dumps(doc.info), doc.ingested_at))
            self.conn.executemany(
                'INSERT INTO chunks(vid, chunk_id, doc_id, ord, page, start, "end", heading, text) VALUES(?,?,?,?,?,?,?,?,?)',
                [(c.vid, c.chunk_id, c.doc_id, c.ord, c.page, c.start, c.end, c.heading, c.text) for c in chunks])
            if len(chunks):
                self.dense.add([c.vid for c in chunks], vectors)
        self.dirty = True

    def commit(self) -> None:
        if not self.dirty:
            return
        new_gen = self.generation + 1
        old_kind = self.dense.kind
        kind, params, _ = self.dense.write(new_gen, self.settings, self.requested)
        _fsync_dir(self.store.path)
        self._meta_set("index_kind", kind)
        self._meta_set("index_params", json.dumps(params, sort_keys=True))
        self._meta_set("generation", str(new_gen))
        self._meta_set("last_ingest", str(time.time()))
        self.conn.execute("COMMIT")  # the moment the new generation becomes visible
        self.generation = new_gen
        self.dirty = False
        self._sweep(old_kind)
        self.conn.execute("BEGIN IMMEDIATE")

    def _sweep(self, previous_kind: str) -> None:
        keep = {f.name for f in self.store.generation_files(self.generation, self.dense.kind)}
        keep |= {f.name for f in self.store.generation_files(self.generation - 1, previous_kind)}
        for f in self.store.path.glob("vectors.*"):
            if f.name not in keep:
                with contextlib.suppress(OSError):
                    f.unlink()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")  # uncommitted work is dropped; the last generation stays
        self.conn.close()
