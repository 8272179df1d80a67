"""The dense vector index of one generation, in one of three kinds, and how each is written, read and searched.

=======  =================================================  ==============================================
kind     files of generation ``g``                          read by a snapshot
=======  =================================================  ==============================================
flat     ``vectors.g.faiss``: IndexIDMap2(IndexFlatIP),     ``IO_FLAG_MMAP_IFC``: the float32 vectors stay
         exact                                              in the file (mapped); the id map is read
hnsw     ``vectors.g.faiss``: IndexIDMap2(IndexHNSWFlat),   ``IO_FLAG_MMAP_IFC``: the float32 vector storage
         graph + the float32 vectors                        is mapped; the graph and id map are read
ivfpq    ``vectors.g.faiss``: IndexIVFPQ (inner product),   ``IO_FLAG_MMAP``: the inverted lists (PQ codes
         the chunk ids as its ids                           and ids) stay in the file; centroids and PQ
                                                            codebooks are read
         ``vectors.g.f16.npy``: the exact vectors, float16,  rows read on demand with ``os.pread``
         one row per id of ``vectors.g.ids.npy`` (int64,    (:class:`Float16Rows`); ids with
         ascending)                                         ``np.load(allow_pickle=False)`` (8 B a vector)
=======  =================================================  ==============================================

Where the full vectors live: in the FAISS file for flat and hnsw (their storage *is* the vectors, so no
second copy), in the float16 file for ivfpq (PQ codes cannot give them back). An ivfpq search takes a
shortlist of ``rerank`` candidates from the PQ codes and scores it exactly against the float16 vectors:
PQ finds the neighbourhood, the exact scores order it.

Changes: flat adds and removes in place. hnsw and ivfpq collect a writer's adds and removes and apply
them when the generation is written. FAISS cannot remove from an HNSW graph, so a generation that removes
anything from an hnsw index rebuilds the graph from its stored vectors (exact, nothing to filter at search
time; tombstones would make every search filter them and leave the graph's routing through dead nodes).
An IVF index is retrained (coarse centroids and PQ codebooks, from its exact vectors) when the kind
changes to ivfpq and when the corpus has grown ``retrain_growth`` times since it was trained.

The kind and its parameters are recorded in the index's SQLite meta (``index_kind``, ``index_params``),
never guessed from the files; a file that is not what the meta says is reported as damage.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from app.errors import IndexDamaged
from app.settings import IndexSettings

KINDS = ("flat", "hnsw", "ivfpq")
# IVF-PQ trains 256 centroids per sub-quantizer and its coarse lists on the vectors it indexes; below this
# many vectors an index stays flat (which is also faster there).
MIN_IVFPQ = 1024
# A restricted search (document-first) over at most this many ids scores them exactly (see
# DenseIndex._exact_subset): 50,000 x 384 dimensions is about 10 ms.
EXACT_SUBSET = 50_000
_BLOCK = 65536  # vectors moved per step when a generation is rebuilt (bounded memory)
_TRAIN_PER_LIST = 64  # training vectors per coarse list (FAISS warns under 39)


def _faiss():
    from app.errors import require

    return require("faiss", "faiss-cpu")


def files_for(folder: Path, generation: int, kind: str) -> list[Path]:
    """The files of one generation of an index of this kind (the FAISS file first)."""
    files = [folder / f"vectors.{generation}.faiss"]
    if kind == "ivfpq":
        files += [folder / f"vectors.{generation}.f16.npy", folder / f"vectors.{generation}.ids.npy"]
    return files


def check_kind(folder: Path, kind: str) -> str:
    if kind not in KINDS:
        raise IndexDamaged(f"{folder}: the index records the vector index kind '{kind}', which this slmrag does not "
                           f"know (known: {', '.join(KINDS)}); upgrade slmrag, or delete the folder and ingest again.")
    return kind


def parse_params(folder: Path, raw: str | None) -> dict:
    try:
        params = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise IndexDamaged(f"{folder}: the recorded index_params are not JSON ({exc}); the index is damaged - "
                           "delete the folder and ingest again.") from exc
    if not isinstance(params, dict):
        raise IndexDamaged(f"{folder}: the recorded index_params are not an object; the index is damaged.")
    return params


def read_faiss(file: Path, flags: int = 0):
    """faiss.read_index with clear errors.

    faiss raises RuntimeError for a missing file too, so a generation swept by a writer between our reading
    its number and opening its file surfaces as FileNotFoundError (which snapshots retry on); a damaged or
    foreign file (say, a pickle planted in its place - faiss never unpickles, it only parses its own format)
    becomes an IndexDamaged instead of a C++ traceback.
    """
    try:
        return _faiss().read_index(str(file), flags)
    except RuntimeError as exc:
        if not file.exists():
            raise FileNotFoundError(str(file)) from exc
        raise IndexDamaged(f"{file}: not a valid FAISS vector file ({str(exc).strip().splitlines()[-1][:160]}); "
                           "the index is damaged - delete the folder and ingest again.") from exc


class Float16Rows:
    """The rows of a float16 .npy file, read on demand with ``os.pread`` (an array-like: ``shape``,
    ``len``, slices and integer arrays).

    Why not ``np.load(mmap_mode='r')``: on this kernel a page fault in a mapped file maps a whole large
    folio of the page cache, and a mapped file's RSS then reflects the file, not what is used (measured:
    100 random 768-byte rows of a 768 MB file added 114 MB to RSS; 200 queries mapped all of it). pread
    copies just the rows; the rest stays in the page cache, which the kernel reclaims as it needs.
    """

    def __init__(self, file: Path):
        self.file = file
        with open(file, "rb") as fh:
            version = np.lib.format.read_magic(fh)  # numpy's own header parser (a literal, never a pickle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            self.offset = fh.tell()
        if dtype != np.float16 or fortran or len(shape) != 2:
            raise ValueError(f"expected a C-ordered 2-D float16 array, found {dtype}{shape}")
        self.shape, self.dtype = tuple(shape), np.dtype(np.float16)
        self.row_bytes = shape[1] * 2
        if file.stat().st_size < self.offset + shape[0] * self.row_bytes:
            raise ValueError("the file is shorter than its header says")
        self._fd = os.open(file, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return 2

    def __del__(self):
        with contextlib.suppress(Exception):
            os.close(self._fd)

    def _read(self, start: int, n: int) -> np.ndarray:
        data = os.pread(self._fd, n * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, dtype=np.float16).reshape(n, self.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("only contiguous slices")
            return self._read(start, max(0, stop - start))
        rows = np.asarray(key, dtype="int64").reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError("row out of range")
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((len(rows), self.shape[1]), dtype=np.float16)
        # Runs of consecutive rows are one read each.
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        at = 0
        for run in np.split(ordered, breaks) if len(ordered) else []:
            out[order[at:at + len(run)]] = self._read(int(run[0]), len(run))
            at += len(run)
        return out


def _load_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as exc:
        raise IndexDamaged(f"{file}: not a valid vector file ({exc}); the index is damaged - delete the folder and "
                           "ingest again.") from exc


def _exact_rows(file: Path) -> Float16Rows:
    try:
        return Float16Rows(file)
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as exc:
        raise IndexDamaged(f"{file}: not a valid vector file ({exc}); the index is damaged - delete the folder and "
                           "ingest again.") from exc


def _inner(index):
    """The FAISS index under an IndexIDMap2 (downcast, so its kind can be checked)."""
    return _faiss().downcast_index(index.index)


def _matches(kind: str, index) -> bool:
    faiss = _faiss()
    if kind == "ivfpq":
        return isinstance(index, faiss.IndexIVFPQ)
    if not isinstance(index, faiss.IndexIDMap2):
        return False
    inner = _inner(index)
    return isinstance(inner, faiss.IndexHNSWFlat) if kind == "hnsw" else type(inner) in (faiss.IndexFlatIP, faiss.IndexFlat)


class DenseIndex:
    """One generation's dense index, read-only: what a snapshot searches. Build it with :func:`read`."""

    def __init__(self, kind: str, params: dict, index, exact: np.ndarray | None = None,
                 exact_ids: np.ndarray | None = None):
        self.kind = kind
        self.params = params
        self.index = index  # the FAISS index
        self.exact = exact  # ivfpq: float16 vectors (Float16Rows: read on demand), rows in exact_ids order
        self.exact_ids = exact_ids  # ivfpq: ascending int64 chunk ids

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def ids(self) -> np.ndarray:
        """Every chunk id in the FAISS index (for consistency checks)."""
        faiss = _faiss()
        if self.kind != "ivfpq":
            return faiss.vector_to_array(self.index.id_map)
        invlists = self.index.invlists
        parts = []
        for lst in range(invlists.nlist):
            n = invlists.list_size(lst)
            if n:
                ptr = invlists.get_ids(lst)
                parts.append(faiss.rev_swig_ptr(ptr, n).copy())
                invlists.release_ids(lst, ptr)
        return np.concatenate(parts) if parts else np.zeros(0, dtype="int64")

    def vector(self, vid: int) -> np.ndarray:
        if self.kind != "ivfpq":
            return self.index.reconstruct(int(vid))
        row = self._rows(np.asarray([vid], dtype="int64"))
        if row[0] < 0:
            raise KeyError(vid)
        return np.asarray(self.exact[row[0]], dtype="float32")

    def _rows(self, vids: np.ndarray) -> np.ndarray:
        """Rows of the float16 file for these ids (-1 where absent)."""
        rows = np.searchsorted(self.exact_ids, vids)
        rows = np.minimum(rows, len(self.exact_ids) - 1)
        return np.where(self.exact_ids[rows] == vids, rows, -1)

    def search(self, queries: np.ndarray, k: int, *, vids: np.ndarray | None = None,
               settings: IndexSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product for each query row: (scores, ids), -1 ids where fewer exist. ``vids``
        restricts the search to those chunk ids (document-first search)."""
        faiss = _faiss()
        s = settings or IndexSettings()
        q = np.ascontiguousarray(queries, dtype="float32").reshape(-1, self.d)
        k = max(1, min(k, self.ntotal))
        if vids is not None and self.kind != "flat" and len(vids) <= EXACT_SUBSET:
            return self._exact_subset(q, k, np.asarray(vids, dtype="int64"))
        # FAISS wants the selector object alive for the whole search: keep it in a local.
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(vids, dtype="int64")) if vids is not None else None
        extra = {"sel": sel} if sel is not None else {}
        if self.kind == "flat":
            return self.index.search(q, k, params=faiss.SearchParameters(**extra) if extra else None)
        if self.kind == "hnsw":
            return self.index.search(q, k, params=faiss.SearchParametersHNSW(efSearch=max(s.hnsw_ef_search, k), **extra))
        shortlist = min(max(s.rerank, k), self.ntotal)
        approx, ids = self.index.search(q, shortlist, params=faiss.SearchParametersIVF(nprobe=s.ivf_nprobe, **extra))
        if s.rerank <= 0:
            return approx[:, :k], ids[:, :k]
        out_s = np.full((len(q), k), -np.inf, dtype="float32")
        out_i = np.full((len(q), k), -1, dtype="int64")
        for r in range(len(q)):
            cand = ids[r][ids[r] >= 0]
            rows = self._rows(cand)
            cand, rows = cand[rows >= 0], rows[rows >= 0]
            if not len(cand):
                continue
            exact = np.asarray(self.exact[rows], dtype="float32") @ q[r]
            best = np.argsort(-exact)[:k]
            out_s[r, :len(best)] = exact[best]
            out_i[r, :len(best)] = cand[best]
        return out_s, out_i


    def _exact_subset(self, q: np.ndarray, k: int, vids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores over a small id set (a document's chunks). HNSW's graph routes badly through a
        filter that admits a few percent of its nodes (recall 0.6 measured at 4 %), and IVF would probe
        lists holding none of them; the set's own vectors are at hand and few, so score them all."""
        if self.kind == "ivfpq":
            rows = self._rows(vids)
            vids, rows = vids[rows >= 0], rows[rows >= 0]
            vecs = np.asarray(self.exact[rows], dtype="float32")
        else:
            vecs = self.index.reconstruct_batch(vids)
        scores = vecs @ q.T  # (len(vids), n queries)
        kk = min(k, len(vids))
        out_s = np.full((len(q), k), -np.inf, dtype="float32")
        out_i = np.full((len(q), k), -1, dtype="int64")
        for r in range(len(q)):
            best = np.argsort(-scores[:, r])[:kk]
            out_s[r, :kk], out_i[r, :kk] = scores[best, r], vids[best]
        return out_s, out_i


def read(folder: Path, generation: int, kind: str, params: dict, *, mmap: bool = True) -> DenseIndex:
    """Read one generation's dense index; ``mmap`` maps what FAISS and numpy can map (see the module doc)."""
    faiss = _faiss()
    check_kind(folder, kind)
    files = files_for(folder, generation, kind)
    flags = 0
    if mmap:
        flags = faiss.IO_FLAG_MMAP if kind == "ivfpq" else faiss.IO_FLAG_MMAP_IFC
    index = read_faiss(files[0], flags)
    if not _matches(kind, index):
        raise IndexDamaged(f"{files[0]}: the index records kind '{kind}' but this file holds a "
                           f"{type(index).__name__}; the index is damaged - delete the folder and ingest again.")
    if kind != "ivfpq":
        return DenseIndex(kind, params, index)
    exact = _exact_rows(files[1])
    ids = np.asarray(_load_npy(files[2]))
    if exact.dtype != np.float16 or exact.ndim != 2 or exact.shape != (index.ntotal, index.d) \
            or ids.dtype != np.int64 or ids.shape != (index.ntotal,) or (len(ids) > 1 and not np.all(ids[1:] > ids[:-1])):
        raise IndexDamaged(f"{files[1].name}/{files[2].name}: expected {index.ntotal} float16 vectors of "
                           f"{index.d} dimensions with ascending int64 ids, found {exact.dtype}{exact.shape} and "
                           f"{ids.dtype}{ids.shape}; the index is damaged - delete the folder and ingest again.")
    return DenseIndex(kind, params, index, exact, ids)


# ---------------------------------------------------------------------------------------------- writing
def decide_kind(current: str, n: int, settings: IndexSettings, requested: str | None) -> str:
    """The kind a generation of ``n`` vectors is written as.

    ``requested`` (``slmrag ingest --index-kind``, remembered in the meta) wins, then the pack's explicit
    ``index.kind``; ``auto`` turns a flat index into ivfpq once it holds ``auto_threshold`` vectors and
    otherwise keeps what the index is. ivfpq needs :data:`MIN_IVFPQ` vectors to train on: below that the
    index is flat whatever was asked.
    """
    want = requested or settings.kind
    if want == "auto":
        want = "ivfpq" if current == "flat" and n >= settings.auto_threshold else current
    if want == "ivfpq" and n < MIN_IVFPQ:
        return "flat"
    return want


def auto_nlist(n: int) -> int:
    """Coarse lists for n vectors: the power of two nearest 2*sqrt(n), with at least 39 vectors a list."""
    target = max(1.0, 2 * math.sqrt(n))
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and n / nlist < 39:
        nlist //= 2
    return int(min(max(nlist, 1), 65536))


def auto_pq_m(d: int, wanted: int) -> int:
    """PQ sub-quantizers: ``wanted`` (0: one per 8 dimensions), lowered to a divisor of d."""
    m = wanted or max(1, d // 8)
    while d % m:
        m -= 1
    return m


@dataclass
class _Segment:
    ids: np.ndarray  # int64
    vecs: object  # (n, d) array-like (float32 view of a FAISS storage, float16 memmap, float32 array)


@dataclass
class _Source:
    """All vectors of the next generation, as segments (nothing concatenated: 5M float32 = 7.7 GB)."""

    segments: list[_Segment] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(len(s.ids) for s in self.segments)

    def blocks(self, size: int = _BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for seg in self.segments:
            for a in range(0, len(seg.ids), size):
                yield seg.ids[a:a + size], np.asarray(seg.vecs[a:a + size], dtype="float32")

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        total = self.n
        take = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
        out, offset = [], 0
        for seg in self.segments:
            local = take[(take >= offset) & (take < offset + len(seg.ids))] - offset
            if len(local):
                out.append(np.asarray(seg.vecs[local], dtype="float32"))
            offset += len(seg.ids)
        return np.ascontiguousarray(np.concatenate(out))

    def sorted_rows(self, size: int = _BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, float32 vectors) in ascending id order, a block at a time."""
        ids = np.concatenate([s.ids for s in self.segments]) if self.segments else np.zeros(0, dtype="int64")
        order = np.argsort(ids, kind="stable")
        starts = np.cumsum([0] + [len(s.ids) for s in self.segments])
        for a in range(0, len(order), size):
            pos = order[a:a + size]
            block = np.empty((len(pos), self._d()), dtype="float32")
            seg_of = np.searchsorted(starts, pos, side="right") - 1
            for si in np.unique(seg_of):
                mask = seg_of == si
                local = pos[mask] - starts[si]
                sub = np.argsort(local)  # read each segment forwards
                rows = np.empty((len(local), self._d()), dtype="float32")
                rows[sub] = np.asarray(self.segments[si].vecs[local[sub]], dtype="float32")
                block[mask] = rows
            yield ids[pos], block

    def _d(self) -> int:
        return int(np.shape(self.segments[0].vecs)[1])


class DenseWriter:
    """A writer's dense index: current generation loaded (not mapped: it changes), changes applied or
    collected, and :meth:`write` producing the next generation's files."""

    def __init__(self, folder: Path, generation: int, kind: str, params: dict, dim: int):
        faiss = _faiss()
        self.folder = folder
        self.kind = kind
        self.params = dict(params)
        self.d = dim
        self._removed: set[int] = set()  # hnsw, ivfpq: ids removed from the current generation
        self._added: dict[int, np.ndarray] = {}  # hnsw, ivfpq: id -> vector added since
        self.base: DenseIndex | None = None
        if generation > 0:
            self.base = read(folder, generation, kind, self.params, mmap=(kind == "ivfpq"))
            if kind == "ivfpq":  # the FAISS part changes in place, so read it into memory
                self.base.index = read_faiss(files_for(folder, generation, kind)[0])
            self.d = self.base.d
        else:
            self.base = DenseIndex("flat", {}, faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))
            self.kind = "flat"
        self._base_ids: set[int] | None = None

    @property
    def index(self):
        return self.base.index

    @property
    def ntotal(self) -> int:
        if self.kind == "flat":
            return self.base.ntotal
        return self.base.ntotal - len(self._removed) + len(self._added)

    def _in_base(self, vid: int) -> bool:
        if self._base_ids is None:
            self._base_ids = set(self.base.ids().tolist())
        return vid in self._base_ids

    def remove(self, vids: list[int]) -> None:
        if self.kind == "flat":
            self.index.remove_ids(np.asarray(vids, dtype="int64"))
            return
        for v in vids:
            if self._added.pop(int(v), None) is None and self._in_base(int(v)):
                self._removed.add(int(v))

    def add(self, vids: list[int], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype="float32")
        if self.kind == "flat":
            self.index.add_with_ids(vectors, np.asarray(vids, dtype="int64"))
            return
        for v, vec in zip(vids, vectors):
            if self._in_base(int(v)) and int(v) not in self._removed:
                raise ValueError(f"chunk id {v} is already in the index")
            self._added[int(v)] = vec

    # ------------------------------------------------------------------ the next generation
    def _source(self) -> _Source:
        faiss = _faiss()
        src = _Source()
        base = self.base
        if base.ntotal:
            if base.kind == "ivfpq":
                ids, vecs = base.exact_ids, base.exact
            else:
                storage = base.index.index if base.kind == "flat" else faiss.downcast_index(base.index.index).storage
                storage = faiss.downcast_index(storage)
                ids = faiss.vector_to_array(base.index.id_map)
                vecs = faiss.rev_swig_ptr(storage.get_xb(), base.ntotal * self.d).reshape(base.ntotal, self.d)
            if self._removed:
                keep = ~np.isin(ids, np.fromiter(self._removed, dtype="int64"))
                ids, vecs = ids[keep], _Rows(vecs, np.flatnonzero(keep))
            src.segments.append(_Segment(ids, vecs))
        if self._added:
            src.segments.append(_Segment(np.fromiter(self._added, dtype="int64", count=len(self._added)),
                                         np.stack(list(self._added.values()))))
        return src

    def write(self, generation: int, settings: IndexSettings, requested: str | None) -> tuple[str, dict, list[Path]]:
        """Write generation ``generation``'s files (each fsynced, renamed into place) and return
        (kind, params, files). Nothing is visible until the caller commits the meta that names them."""
        n = self.ntotal
        kind = decide_kind(self.kind, n, settings, requested)
        params = dict(self.params) if kind == self.kind else {}
        files = files_for(self.folder, generation, kind)
        tmp = [f.with_name(f.name + f".tmp{os.getpid()}") for f in files]
        try:
            if kind == "flat":
                index = self._flat_index() if self.kind != "flat" else self.index
                params = {}
            elif kind == "hnsw":
                index, params = self._hnsw_index(settings, params)
            else:
                index, params = self._ivfpq(settings, params, n, tmp[1], tmp[2])
            _faiss().write_index(index, str(tmp[0]))
            for t, f in zip(tmp, files):
                with open(t, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(t, f)
        finally:
            for t in tmp:
                with contextlib.suppress(OSError):
                    t.unlink()
        # The written generation is the new base for further changes in this writer (its FAISS index is
        # the one in memory; ivfpq's exact vectors are mapped from the file just written).
        if kind == "ivfpq":
            self.base = DenseIndex(kind, params, index, _exact_rows(files[1]), np.asarray(_load_npy(files[2])))
        else:
            self.base = DenseIndex(kind, params, index)
        self.kind, self.params = kind, params
        self._removed, self._added, self._base_ids = set(), {}, None
        return kind, params, files

    def _flat_index(self):
        faiss = _faiss()
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.d))
        for ids, vecs in self._source().blocks():
            index.add_with_ids(vecs, ids)
        return index

    def _hnsw_index(self, settings: IndexSettings, params: dict):
        faiss = _faiss()
        if self.kind == "hnsw" and not self._removed:  # appends only: grow the graph in place
            if self._added:
                self.index.add_with_ids(np.stack(list(self._added.values())),
                                        np.fromiter(self._added, dtype="int64", count=len(self._added)))
            return self.index, params
        params = {"M": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction}
        inner = faiss.IndexHNSWFlat(self.d, params["M"], faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = params["ef_construction"]
        index = faiss.IndexIDMap2(inner)
        for ids, vecs in self._source().blocks():
            index.add_with_ids(vecs, ids)
        return index, params

    def _ivfpq(self, settings: IndexSettings, params: dict, n: int, f16_tmp: Path, ids_tmp: Path):
        faiss = _faiss()
        src = self._source()
        trained_on = int(params.get("trained_on", 0))
        retrain = self.kind != "ivfpq" or not trained_on or n >= settings.retrain_growth * trained_on
        if retrain:
            nlist = settings.ivf_nlist or auto_nlist(n)
            m = auto_pq_m(self.d, settings.pq_m)
            quantizer = faiss.IndexFlatIP(self.d)
            index = faiss.IndexIVFPQ(quantizer, self.d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = 10  # k-means iterations: 10 is within a hair of 25 here, at 40 % of the cost
            index.train(src.sample(max(_TRAIN_PER_LIST * nlist, 256 * 40)))
            index.own_fields = True
            quantizer.this.disown()
            for ids, vecs in src.blocks():
                index.add_with_ids(vecs, ids)
            params = {"nlist": nlist, "m": m, "nbits": 8, "trained_on": n}
        else:
            index = self.index
            if self._removed:
                index.remove_ids(faiss.IDSelectorBatch(np.fromiter(self._removed, dtype="int64")))
            if self._added:
                index.add_with_ids(np.stack(list(self._added.values())),
                                   np.fromiter(self._added, dtype="int64", count=len(self._added)))
        exact = np.lib.format.open_memmap(f16_tmp, mode="w+", dtype=np.float16, shape=(n, self.d))
        all_ids = np.empty(n, dtype="int64")
        at = 0
        for ids, vecs in src.sorted_rows():
            exact[at:at + len(ids)] = vecs
            all_ids[at:at + len(ids)] = ids
            at += len(ids)
        exact.flush()
        del exact
        with open(ids_tmp, "wb") as fh:
            np.save(fh, all_ids, allow_pickle=False)
        return index, params


class _Rows:
    """Selected rows of a 2-D array-like, sliceable like one (for the survivors of a removal)."""

    def __init__(self, base, rows: np.ndarray):
        self.base, self.rows = base, rows
        self.shape = (len(rows), base.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return self.base[self.rows[key]]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.base[self.rows], dtype=dtype)
