#!/usr/bin/env python
"""Big dense indexes on one machine: recall@10 against exact search, query latency, RAM and build time
of each index kind (flat, hnsw, ivfpq) at 1M and 5M vectors. Prints JSON lines; asserts nothing.

The vectors are real chunk embeddings (MiniLM, read out of built pack indexes) repeated with Gaussian
noise up to the size and renormalised; the queries are fresh noisy copies of random real chunks. The
indexes are built by the store's own code (:class:`app.vector_index.DenseWriter`) and read back as a
snapshot reads them (memory-mapped), so the figures are the store's.

Steps, each one invocation (run under the CPU lock, each within ~10 minutes on 2 cores); everything
is cached under ``--work`` (default /tmp/slmrag-bigindex) between steps::

    python bench/big_index.py data  --size 1000000             # vectors (float16 file) + exact top-10
    python bench/big_index.py build --size 1000000 --kind ivfpq # build time, files and bytes on disk
    python bench/big_index.py query --size 1000000 --kind ivfpq [--nprobe 16,32,64] [--rerank 100,200]
    python bench/big_index.py table                              # every result so far, as a table

``data`` streams: the dataset is written a block at a time, and the exact ground truth is computed
over it in blocks (5M float32 vectors would be 7.7 GB), so neither needs the whole set in RAM.
``query`` runs in a fresh process: its RSS (VmRSS, and the anonymous / file-backed split) is the index's
cost after loading and after the queries, next to flat's size (n x d x 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SOURCES = [Path("/work/evals/idxlinks") / p for p in ("finance", "legal", "medical")]
NOISE = 0.032  # per-dimension sigma: a copy keeps cosine ~0.85 with its chunk (384 dims)
N_QUERIES = 200
K = 10


def rss() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def real_vectors(sources: list[Path]) -> np.ndarray:
    from app.store import IndexStore

    parts = []
    for src in sources:
        store = IndexStore(src)
        if not store.exists():
            continue
        snap = store.snapshot()
        if snap.dense is None or not snap.dense.ntotal:
            continue
        ids = snap.dense.ids()
        parts.append(np.stack([snap.vector(int(v)) for v in ids]).astype("float32"))
    if not parts:
        sys.exit("no built index found under " + ", ".join(map(str, sources)) + "; pass --source DIR")
    base = np.concatenate(parts)
    return base / np.linalg.norm(base, axis=1, keepdims=True)


def noisy(base: np.ndarray, picks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = base[picks] + rng.standard_normal((len(picks), base.shape[1]), dtype=np.float32) * NOISE
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cmd_data(a) -> dict:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    base = real_vectors([Path(s) for s in a.source] if a.source else SOURCES)
    t0 = time.perf_counter()
    rng = np.random.default_rng(a.size)
    path = work / f"data_{a.size}.f16.npy"
    data = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16,
                                     shape=(a.size, base.shape[1]))
    block = 250_000
    for s in range(0, a.size, block):
        n = min(block, a.size - s)
        data[s:s + n] = noisy(base, rng.integers(0, len(base), size=n), rng)
    data.flush()
    del data
    os.replace(path.with_suffix(".tmp.npy"), path)
    made = time.perf_counter() - t0
    queries = noisy(base, np.random.default_rng(12345).integers(0, len(base), size=N_QUERIES),
                    np.random.default_rng(54321))
    np.save(work / "queries.npy", queries)
    # Exact top-K by inner product, streamed over the float16 file (as float32 per block).
    t0 = time.perf_counter()
    data = np.load(path, mmap_mode="r")
    best_s = np.full((N_QUERIES, K), -np.inf, dtype="float32")
    best_i = np.full((N_QUERIES, K), -1, dtype="int64")
    for s in range(0, a.size, block):
        scores = queries @ np.asarray(data[s:s + block], dtype="float32").T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + s], 1)
        order = np.argsort(-cand_s, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    np.save(work / f"truth_{a.size}.npy", best_i)
    return {"step": "data", "size": a.size, "real_chunks": len(base), "noise_sigma": NOISE,
            "make_s": round(made, 1), "truth_s": round(time.perf_counter() - t0, 1),
            "bytes_f16": path.stat().st_size}


def _index_settings(a, nprobe: int | None = None, rerank: int | None = None):
    from app.settings import IndexSettings

    kw = {}
    if nprobe is not None:
        kw["ivf_nprobe"] = nprobe
    if rerank is not None:
        kw["rerank"] = rerank
    if a.ef_search:
        kw["hnsw_ef_search"] = a.ef_search
    if a.hnsw_m:
        kw["hnsw_m"] = a.hnsw_m
    if a.ef_construction:
        kw["hnsw_ef_construction"] = a.ef_construction
    return IndexSettings(**kw)


def cmd_build(a) -> dict:
    from app.vector_index import DenseWriter, _Segment, _Source

    work = Path(a.work)
    data = np.load(work / f"data_{a.size}.f16.npy", mmap_mode="r")
    folder = work / f"{a.kind}_{a.size}"
    folder.mkdir(exist_ok=True)
    for f in folder.glob("vectors.*"):
        f.unlink()

    class Bulk(DenseWriter):
        """The store's writer, fed the whole dataset by reference (the memory-mapped float16 file)
        instead of a document at a time: the same builders, without a second copy of 5M vectors."""

        def __init__(self):
            super().__init__(folder, 0, "flat", {}, data.shape[1])
            self.kind = "new"

        @property
        def ntotal(self) -> int:
            return len(data)

        def _source(self):
            return _Source([_Segment(np.arange(len(data), dtype="int64"), data)])

    t0 = time.perf_counter()
    kind, params, files = Bulk().write(1, _index_settings(a), a.kind)
    took = time.perf_counter() - t0
    (folder / "built.json").write_text(json.dumps({"kind": kind, "params": params}))
    return {"step": "build", "size": a.size, "kind": kind, "params": params, "build_s": round(took, 1),
            "files": {f.name: f.stat().st_size for f in files}, "bytes": sum(f.stat().st_size for f in files),
            "peak_rss": rss()["VmHWM"]}


def cmd_query(a) -> list[dict]:
    from app import vector_index

    work = Path(a.work)
    folder = work / f"{a.kind}_{a.size}"
    built = json.loads((folder / "built.json").read_text())
    queries = np.load(work / "queries.npy")
    truth = np.load(work / f"truth_{a.size}.npy")
    before = rss()
    t0 = time.perf_counter()
    dense = vector_index.read(folder, 1, built["kind"], built["params"], mmap=True)
    load_s = time.perf_counter() - t0
    loaded = rss()
    out = []
    nprobes = [int(x) for x in a.nprobe.split(",")] if a.nprobe else [None]
    reranks = [int(x) for x in a.rerank.split(",")] if a.rerank else [None]
    for nprobe in nprobes:
        for rerank in reranks:
            settings = _index_settings(a, nprobe, rerank)
            dense.search(queries[:5], K, settings=settings)  # warm-up: first touches of the mapped files
            times, hits = [], 0.0
            for q, t in zip(queries, truth):
                s = time.perf_counter()
                _, ids = dense.search(q, K, settings=settings)
                times.append((time.perf_counter() - s) * 1000)
                hits += len(set(ids[0].tolist()) & set(t.tolist())) / K
            times.sort()
            after = rss()
            out.append({"step": "query", "size": a.size, "kind": built["kind"], "params": built["params"],
                        "search": {"nprobe": settings.ivf_nprobe, "rerank": settings.rerank,
                                   "ef_search": settings.hnsw_ef_search} if built["kind"] != "flat" else {},
                        "recall_at_10": round(hits / len(queries), 4),
                        "p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * len(times)) - 1], 2),
                        "load_s": round(load_s, 2), "rss_before_load": before["VmRSS"],
                        "rss_loaded": loaded["VmRSS"], "rss_after_queries": after["VmRSS"],
                        "rss_anon_after": after["RssAnon"], "rss_file_after": after["RssFile"],
                        "index_rss": after["VmRSS"] - before["VmRSS"],
                        "flat_bytes": int(dense.ntotal) * dense.d * 4,
                        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count()})
    return out


def cmd_table(a) -> None:
    rows = [json.loads(line) for line in (Path(a.work) / "results.jsonl").read_text().splitlines() if line.strip()]
    builds = {(r["size"], r["kind"]): r for r in rows if r["step"] == "build"}
    print("| size | kind | params | search | recall@10 | p50 ms | p95 ms | index RSS MiB | flat MiB | on disk MiB | build s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["step"] != "query":
            continue
        b = builds.get((r["size"], r["kind"]), {})
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        search = ", ".join(f"{k}={v}" for k, v in r["search"].items() if
                           (r["kind"] == "ivfpq" and k != "ef_search") or (r["kind"] == "hnsw" and k == "ef_search"))
        print(f"| {r['size']:,} | {r['kind']} | {params} | {search} | {r['recall_at_10']:.3f} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['index_rss'] / 2**20:.0f} | {r['flat_bytes'] / 2**20:.0f} | "
              f"{b.get('bytes', 0) / 2**20:.0f} | {b.get('build_s', '')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["data", "build", "query", "table"])
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--kind", choices=["flat", "hnsw", "ivfpq"], default="ivfpq")
    p.add_argument("--work", default="/tmp/slmrag-bigindex")
    p.add_argument("--source", action="append", help="a built pack index folder to take real vectors from")
    p.add_argument("--nprobe", help="ivfpq: comma-separated nprobe values to measure")
    p.add_argument("--rerank", help="ivfpq: comma-separated shortlist sizes to measure")
    p.add_argument("--ef-search", type=int)
    p.add_argument("--hnsw-m", type=int)
    p.add_argument("--ef-construction", type=int)
    a = p.parse_args()
    if a.step == "table":
        return cmd_table(a)
    result = {"data": cmd_data, "build": cmd_build, "query": cmd_query}[a.step](a)
    with (Path(a.work) / "results.jsonl").open("a") as fh:
        for r in result if isinstance(result, list) else [result]:
            print(json.dumps(r))
            fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
