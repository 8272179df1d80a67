#!/usr/bin/env python
"""Large-corpus ingestion (issue 16, part 5): ~50 long SEC filings (~9,000 pages) through ``slmrag ingest``,
killed part-way and resumed, beside the plain pypdf + splitter + SentenceTransformer loop on the same files.

    python bench/big_ingest.py build  [--work DIR] [--pages 9000] [--files 50]
    python bench/big_ingest.py ingest [--work DIR] [--kill-after 480] [--pack finance]   # again until done
    python bench/big_ingest.py naive  [--work DIR] [--naive-pages 1500]
    python bench/big_ingest.py report [--work DIR]

Each step fits the shared machine's 10-minute lock (run each under ``flock /tmp/slmrag-cpu.lock``); every
step prints its JSON and records it in ``<work>/results.json``; ``report`` prints them all together.

* ``build``: the long filings are made from the dev finance PDFs (``/work/shared/data/finance/corpus``):
  each output PDF is several whole source filings appended one after another with pypdf (page content
  streams are copied unchanged, so each page costs what it costs in its source) until it has about
  ``--pages / --files`` pages, in a rotating order, so no two outputs are the same document. Ingest keys
  documents by path (an identical file at another path is a separate document, never skipped), so the
  order, not the metadata, is what makes them distinct. The folder lives in ``--work`` (default
  ``/tmp/slmrag-bigingest``), outside the repository: FinanceBench is non-commercial and stays out of it.
* ``ingest``: ``python -m app ingest <folder> --pack finance --index-dir <work>/index --json`` as a child
  process. With ``--kill-after S`` it is SIGKILLed after S seconds (when it has not finished), which is
  also the bench-scale resume check: the next ``ingest`` step runs the same command, which skips what was
  committed and goes on. The step that finishes runs ``slmrag status --check`` and compares the index with
  the folder (one document per file, every file's pages, no duplicate chunk). Figures: pages/s and
  chunks/s of each run, and overall = all pages / all runs' seconds (restarts and redone work included).
* ``naive``: the plain reference on the first files of the same folder (``--naive-pages`` pages; the full
  folder would take an hour): ``pypdf.PdfReader(f).pages[i].extract_text()`` page by page, the pack's own
  chunker (the same splitter, so the same chunks), and ``SentenceTransformer(...).encode(texts,
  batch_size=32, normalize_embeddings=True)`` with its defaults (fp32). Its pages/s is measured on that
  subset; the time it would take on the whole folder is that rate scaled, and labelled so.

Nothing is asserted: benchmarks are not tests (the resume behaviour is tested at small scale in
tests/test_crash_safety.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "finance" / "corpus"
sys.path.insert(0, str(REPO))


def _record(work: Path, step: str, result: dict) -> dict:
    path = work / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if step == "ingest":
        results.setdefault("ingest_runs", []).append(result)
    else:
        results[step] = result
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(result, indent=2))
    return results


def _quiet_pypdf() -> None:
    import logging

    logging.disable(logging.WARNING)  # pypdf warns about every quirk of real filings


# ------------------------------------------------------------------------------------------------ build
def build(work: Path, pages: int, files: int, source: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    _quiet_pypdf()
    folder = work / "filings"
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(source.glob("*.pdf"))
    counts = {p: len(PdfReader(str(p)).pages) for p in sources}
    per_file = pages / files
    t0 = time.perf_counter()
    manifest, total, k = [], 0, 0
    for n in range(files):
        writer = PdfWriter()
        parts, got = [], 0
        while got < per_file * 0.9 or not parts:
            src = sources[k % len(sources)]
            k += 1
            writer.append(str(src))
            parts.append(src.name)
            got += counts[src]
        writer.add_metadata({"/Title": f"Filings bundle {n + 1:02d}"})
        out = folder / f"bundle_{n + 1:02d}.pdf"
        with open(out, "wb") as fh:
            writer.write(fh)
        manifest.append({"file": out.name, "pages": got, "parts": parts})
        total += got
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    _record(work, "build", {"folder": str(folder), "files": len(manifest), "pages": total,
                            "bytes": sum((folder / m["file"]).stat().st_size for m in manifest),
                            "sources": len(sources), "seconds": round(time.perf_counter() - t0, 1)})


# ----------------------------------------------------------------------------------------------- ingest
def ingest(work: Path, kill_after: float | None, pack: str) -> None:
    folder, index = work / "filings", work / "index"
    cmd = [sys.executable, "-m", "app", "ingest", str(folder), "--pack", pack, "--index-dir", str(index), "--json"]
    env = dict(os.environ)
    env.pop("SLMRAG_PROGRESS", None)
    docs_before = _documents(index)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=kill_after)
        killed = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        killed = True
    seconds = time.perf_counter() - t0
    docs_after = _documents(index)
    result = {"command": " ".join(cmd), "seconds": round(seconds, 1), "killed": killed,
              "documents_before": len(docs_before), "documents_after": len(docs_after),
              "pages_committed": sum(d["pages"] or 0 for d in docs_after.values()) - sum(d["pages"] or 0 for d in docs_before.values()),
              "chunks_committed": sum(d["n_chunks"] for d in docs_after.values()) - sum(d["n_chunks"] for d in docs_before.values())}
    if not killed:
        if proc.returncode not in (0, 1):
            result["error"] = err[-2000:]
        else:
            summary = json.loads(out)
            result.update({k: summary[k] for k in ("pages", "chunks", "seconds", "chunks_per_s")},
                          added=len(summary["added"]), skipped=len(summary["skipped"]), failed=summary["failed"],
                          pages_per_s=round(summary["pages"] / summary["seconds"], 2) if summary["seconds"] else None)
            result["process_seconds"] = round(seconds, 1)
            result["check"] = check(work, pack)
    results = _record(work, "ingest", result)
    if not killed and "check" in result:
        overall(work, results)


def _documents(index: Path) -> dict:
    import sqlite3

    db = index / "meta.sqlite"
    if not db.is_file():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0]: {"name": r[1], "pages": r[2], "n_chunks": r[3]}
                for r in conn.execute("SELECT doc_id, name, pages, n_chunks FROM documents")}
    finally:
        conn.close()


def check(work: Path, pack: str) -> dict:
    """slmrag status --check, and the index against the folder: every file once, with all its pages."""
    import sqlite3

    status = subprocess.run([sys.executable, "-m", "app", "status", "--check", "--json", "--pack", pack,
                             "--index-dir", str(work / "index")], cwd=REPO, capture_output=True, text=True, check=False)
    info = json.loads(status.stdout) if status.stdout.strip() else {}
    manifest = json.loads((work / "manifest.json").read_text())
    docs = _documents(work / "index")
    by_name = {d["name"]: d for d in docs.values()}
    conn = sqlite3.connect(f"file:{work / 'index' / 'meta.sqlite'}?mode=ro", uri=True)
    try:
        rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id || ':' || ord) FROM chunks").fetchone()
    finally:
        conn.close()
    return {"status_exit": status.returncode, "consistent": info.get("consistent"), "problems": info.get("problems"),
            "documents": len(docs), "files": len(manifest),
            "files_missing": [m["file"] for m in manifest if m["file"] not in by_name],
            "page_count_mismatches": [m["file"] for m in manifest
                                      if m["file"] in by_name and by_name[m["file"]]["pages"] != m["pages"]],
            "chunk_rows": rows, "distinct_chunk_positions": distinct,
            "chunks_recorded": sum(d["n_chunks"] for d in docs.values())}


def overall(work: Path, results: dict) -> None:
    runs = results.get("ingest_runs", [])
    seconds = sum(r["seconds"] for r in runs)
    pages = results["build"]["pages"]
    chunks = runs[-1]["check"]["chunks_recorded"]
    results["ingest_overall"] = {
        "runs": len(runs), "kills": sum(r["killed"] for r in runs), "seconds": round(seconds, 1),
        "pages": pages, "chunks": chunks, "pages_per_s": round(pages / seconds, 2),
        "chunks_per_s": round(chunks / seconds, 2),
        "note": "all runs' wall time (model loads at each start and work redone after the kill included)"}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({"ingest_overall": results["ingest_overall"]}, indent=2))


# ------------------------------------------------------------------------------------------------ naive
def naive(work: Path, max_pages: int) -> None:
    _quiet_pypdf()
    from app.models import resolve_model
    from app.packs import load_pack
    from ingest.chunking import Chunker

    manifest = json.loads((work / "manifest.json").read_text())
    subset, pages = [], 0
    for m in manifest:
        if pages >= max_pages:
            break
        subset.append(m)
        pages += m["pages"]
    pack = load_pack("finance")
    t_load = time.perf_counter()
    from pypdf import PdfReader
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model(pack.config.embedder.model, pack.path)), device="cpu")
    t_load = time.perf_counter() - t_load

    def count(text: str) -> int:
        return len(model.tokenizer.encode(text, add_special_tokens=False))

    chunker = Chunker(pack.config.chunking, count)
    t0 = time.perf_counter()
    t_parse = t_chunk = t_embed = 0.0
    n_pages = n_chunks = 0
    per_file = {}
    for m in subset:
        t = time.perf_counter()
        reader = PdfReader(str(work / "filings" / m["file"]))
        texts = []
        title = (reader.metadata.title if reader.metadata else None) or m["file"]
        page_texts = [(i + 1, reader.pages[i].extract_text() or "") for i in range(len(reader.pages))]
        t_parse += time.perf_counter() - t
        t = time.perf_counter()
        for number, text in page_texts:
            texts += [c.embed_text(title, pack.config.chunking.contextual_header) for c in chunker.split(text, number)]
        t_chunk += time.perf_counter() - t
        t = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        t_embed += time.perf_counter() - t
        n_pages += len(page_texts)
        n_chunks += len(texts)
        per_file[m["file"]] = len(texts)
    seconds = time.perf_counter() - t0
    full_pages = sum(m["pages"] for m in manifest)
    _record(work, "naive", {
        "what": "pypdf extract_text page by page + the pack's chunker + SentenceTransformer.encode (fp32, batch 32)",
        "files": len(subset), "pages": n_pages, "chunks": n_chunks, "seconds": round(seconds, 1),
        "model_load_s": round(t_load, 1), "parse_s": round(t_parse, 1), "chunk_s": round(t_chunk, 1),
        "embed_s": round(t_embed, 1), "pages_per_s": round(n_pages / seconds, 2), "chunks_per_s": round(n_chunks / seconds, 2),
        "scaled_to_full_folder_seconds": round(full_pages / (n_pages / seconds), 1),
        "scaled_note": f"estimate for all {full_pages} pages at the subset's rate (not measured)",
        "chunks_per_file": per_file})


def report(work: Path) -> None:
    results = json.loads((work / "results.json").read_text())
    out = {k: v for k, v in results.items() if k != "naive"}
    if "naive" in results:
        out["naive"] = {k: v for k, v in results["naive"].items() if k != "chunks_per_file"}
        # The same files through both: chunks per file must agree (same chunker), or nothing compares.
        docs = {d["name"]: d["n_chunks"] for d in _documents(work / "index").values()}
        per_file = results["naive"]["chunks_per_file"]
        out["naive"]["same_chunks_as_slmrag"] = all(docs.get(f) == n for f, n in per_file.items())
        if "ingest_overall" in results:
            out["speedup_pages_per_s"] = round(results["ingest_overall"]["pages_per_s"] / results["naive"]["pages_per_s"], 2)
    print(json.dumps(out, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["build", "ingest", "naive", "report"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/slmrag-bigingest"))
    ap.add_argument("--source", type=Path, default=DATA)
    ap.add_argument("--pages", type=int, default=9000)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--kill-after", type=float, default=None, help="SIGKILL the ingest after this many seconds.")
    ap.add_argument("--naive-pages", type=int, default=1500)
    ap.add_argument("--pack", default="finance", help="ingest: the pack (a name or folder; e.g. a copy of finance "
                    "with another embedder.precision).")
    args = ap.parse_args()
    work = args.work.resolve()
    if work == REPO or REPO in work.parents:
        sys.exit(f"--work {work} is inside the repository; use a folder outside it (the filings are FinanceBench's).")
    work.mkdir(parents=True, exist_ok=True)
    if args.step == "build":
        build(work, args.pages, args.files, args.source)
    elif args.step == "ingest":
        ingest(work, args.kill_after, args.pack)
    elif args.step == "naive":
        naive(work, args.naive_pages)
    else:
        report(work)


if __name__ == "__main__":
    main()
