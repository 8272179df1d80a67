#!/usr/bin/env python
"""The speed and memory figures of issue 7, each beside the plain library call and the naive baseline.

    python bench/bench_speed.py [--corpus DIR] [--pdf 10K.pdf] [--runs 5] [--pages 2000] [--skip ...]

Prints figures and ratios, asserts nothing (benchmarks are not tests). Parts (``--skip`` any of them):

* ``ingest``: ``slmrag`` ingest of ``--corpus`` into a scratch index (the pack's default embedder
  precision, then forced fp32 = the unoptimised embedder), the same chunk texts through a bare
  ``SentenceTransformer.encode`` (fp32, batch 64), and the naive LangChain baseline's build.
* ``pdf``: one ~100-page filing (``--pdf``) ingested end to end (parse + chunk + embed + store).
* ``answer``: time to first token for questions with 5 passages, retrieval and the pack's filter
  included (warm process, p50 of ``--runs``), decode tokens/s, and a bare llama.cpp call on the same
  prompt.
* ``cold``: ``slmrag ask`` as a fresh process, from spawn to its first answer byte on stdout.
* ``memory``: peak RSS of a process holding what the UI holds for one pack (streamlit imported, the
  embedder, index, filter and generator loaded, one question answered).
* ``bigpdf``: a generated ``--pages``-page PDF ingested in a fresh process (peak RSS, chunks/s), next to
  a tenth of it, to show memory stays flat as the document grows.

Heavy parts run in child processes so each peak RSS is its own. ``SLMRAG_THREADS`` is honoured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

QUESTIONS = {
    "medical": ["What are the clinical symptoms of pertussis?",
                "How is MERS-CoV transmitted between camels and humans?",
                "What is the incubation period of COVID-19?",
                "Which drugs were tested against SARS-CoV-2 in vitro?",
                "Does vitamin D supplementation reduce respiratory infections?"],
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(code: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter; return that JSON."""
    full = f"import sys, json; sys.path.insert(0, {str(REPO)!r}); from bench.bench_speed import *\n{code}"
    out = subprocess.run([sys.executable, "-c", full], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-1500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- ingest
def ingest_once(pack_name: str, corpus: str, index: str, precision: str | None = None) -> dict:
    from app.packs import load_pack
    from ingest.ingestor import Ingestor

    pack = load_pack(pack_name, index)
    if precision:
        pack.config.embedder.precision = precision
    t = time.perf_counter()
    ingestor = Ingestor(pack)
    ingestor.embedder.load()  # model load is start-up, not ingestion speed (reported apart)
    load_s = time.perf_counter() - t
    s = ingestor.ingest([Path(corpus)])
    return {"precision": ingestor.embedder.precision, "load_s": round(load_s, 1), "files": len(s.added),
            "failed": len(s.failed), "pages": s.pages, "chunks": s.chunks, "seconds": round(s.seconds, 1),
            "chunks_per_s": round(s.chunks / s.seconds, 1), "pages_per_s": round(s.pages / s.seconds, 1),
            "peak_rss_mb": round(rss_mb())}


def bare_encode(index: str) -> dict:
    """The plain library call: the stored chunk texts through sentence-transformers, fp32, batch 64."""
    import sqlite3

    import torch
    from sentence_transformers import SentenceTransformer

    from app.env import threads
    from app.models import resolve_model

    torch.set_num_threads(threads())
    texts = [t for (t,) in sqlite3.connect(f"{index}/meta.sqlite").execute("select text from chunks")]
    model = SentenceTransformer(str(resolve_model("packaged:minilm")), device="cpu")
    model.max_seq_length = 256
    t = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True)
    dt = time.perf_counter() - t
    return {"chunks": len(texts), "seconds": round(dt, 1), "chunks_per_s": round(len(texts) / dt, 1)}


def naive_build(corpus: str) -> dict:
    from app.embedder import Embedder
    from app.evaluation.baseline import NaiveRAG
    from app.packs import load_pack

    pack = load_pack("medical")
    emb = Embedder(pack.config.embedder, pack.path).load()
    files = sorted(p for p in Path(corpus).rglob("*") if p.is_file())
    b = NaiveRAG(emb, None).build(files)
    return {"chunks": b.chunks, "seconds": round(b.seconds, 1), "chunks_per_s": round(b.chunks / b.seconds, 1)}


# ---------------------------------------------------------------------------------------------- answer
def answer_speed(pack_name: str, index: str, runs: int) -> dict:
    from app.packs import load_pack
    from app.assistant import Assistant, AskOptions

    a = Assistant(load_pack(pack_name, index)).load()
    qs = (QUESTIONS.get(pack_name) or QUESTIONS["medical"]) * runs
    qs = qs[:max(runs, 1)]
    a.ask(qs[0], AskOptions(k=5, max_tokens=8)).run()  # warm caches (first prefill, BM25 index)
    ttft, tps, retrieve, filt, prompt = [], [], [], [], []
    for q in qs:
        # threshold -1: the filter still scores every passage, and all 5 reach the prompt (the target case)
        ans = a.ask(q, AskOptions(k=5, max_tokens=64, threshold=-1.0)).run()
        t = ans.timings
        ttft.append(t["first_token_s"])
        retrieve.append(t.get("retrieve_s", 0))
        filt.append(t.get("filter_s", 0))
        if t.get("tokens_per_s"):
            tps.append(t["tokens_per_s"])
        prompt.append(a.generator.count_tokens("\n".join(m["content"] for m in a.prompts.messages(q, ans.context))))
    # The bare library call on the last prompt: llama.cpp's own chat completion, nothing of slmrag around it.
    msgs = a.prompts.messages(qs[-1], ans.context)
    llm = a.generator.llm
    bare_ttft, bare_tps = [], []
    for _ in range(min(runs, 3)):
        llm.reset()
        t0 = time.perf_counter()
        first, n = None, 0
        for part in llm.create_chat_completion(messages=msgs, stream=True, max_tokens=64, temperature=0.0):
            if part["choices"][0].get("delta", {}).get("content"):
                first = first or time.perf_counter()
                n += 1
        end = time.perf_counter()
        bare_ttft.append(first - t0)
        if n > 1:
            bare_tps.append((n - 1) / (end - first))
    med = statistics.median
    return {"runs": len(qs), "prompt_tokens_p50": med(prompt), "ttft_p50_s": round(med(ttft), 3),
            "ttft_max_s": round(max(ttft), 3), "retrieve_p50_s": round(med(retrieve), 3),
            "filter_p50_s": round(med(filt), 3), "decode_tok_s": round(med(tps), 1) if tps else None,
            "bare_ttft_p50_s": round(med(bare_ttft), 3), "bare_decode_tok_s": round(med(bare_tps), 1) if bare_tps else None}


def cold_start(pack_name: str, index_root: str, question: str) -> dict:
    """Spawn `slmrag ask` and time its first answer byte on stdout (process start included)."""
    env = {**os.environ, "SLMRAG_INDEX_DIR": index_root, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "app", "ask", question, "--pack", pack_name, "--max-tokens", "16"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    proc.communicate()
    return {"first_byte_s": round(t_first, 2), "ok": proc.returncode == 0 and bool(first)}


def ui_memory(pack_name: str, index: str) -> dict:
    import streamlit  # noqa: F401 - the UI process has it loaded

    from app.packs import load_pack
    from app.assistant import Assistant, AskOptions

    a = Assistant(load_pack(pack_name, index)).load()
    a.relevance_filter()
    a.ask(QUESTIONS["medical"][0], AskOptions(max_tokens=32)).run()
    return {"peak_rss_mb": round(rss_mb())}


# ---------------------------------------------------------------------------------------------- big PDF
def make_pdf(path: Path, pages: int) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    para = ("Section {i}. The company recorded revenue of {r} million in the period, operating expenses of "
            "{e} million and capital expenditure of {c} million. Management discusses liquidity, risks and the "
            "outlook for each segment, with figures compared to the prior period. ")
    for i in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 5, (para * 6).format(i=i + 1, r=1000 + i, e=700 + i % 97, c=50 + i % 13))
    pdf.output(str(path))


def big_pdf(pdf: str, index: str) -> dict:
    r = ingest_once("finance", pdf, index)
    return {k: r[k] for k in ("pages", "chunks", "seconds", "chunks_per_s", "pages_per_s", "peak_rss_mb", "failed")}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(DATA / "medical" / "corpus"))
    ap.add_argument("--pack", default="medical", help="Pack whose settings ingest --corpus and answer.")
    ap.add_argument("--pdf", default=str(DATA / "finance" / "corpus" / "AMCOR_2023_10K.pdf"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--skip", default="", help="Comma list of parts to skip: ingest,pdf,answer,cold,memory,bigpdf")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"threads: {os.environ.get('SLMRAG_THREADS') or os.cpu_count()}  load: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="slmrag-bench-") as tmp:
        root = Path(tmp)
        index = root / "idx" / args.pack
        ingest = child(f"print(json.dumps(ingest_once({args.pack!r}, {args.corpus!r}, {str(index)!r})))")
        print(f"ingest (slmrag, {ingest.get('precision')}): {ingest}")
        if "ingest" not in skip:
            fp32 = child(f"print(json.dumps(ingest_once({args.pack!r}, {args.corpus!r}, "
                         f"{str(root / 'fp32' / args.pack)!r}, 'fp32')))")
            bare = child(f"print(json.dumps(bare_encode({str(index)!r})))")
            naive = child(f"print(json.dumps(naive_build({args.corpus!r})))")
            print(f"ingest (slmrag, fp32 = unoptimised embedder): {fp32}")
            print(f"bare sentence-transformers encode (fp32, same chunk texts): {bare}")
            print(f"naive LangChain baseline build: {naive}")
            if "chunks_per_s" in ingest:
                for name, other in (("fp32 slmrag", fp32), ("bare encode", bare), ("naive build", naive)):
                    if "chunks_per_s" in other:
                        print(f"  ratio slmrag / {name}: {ingest['chunks_per_s'] / other['chunks_per_s']:.2f}x")
        if "pdf" not in skip and Path(args.pdf).is_file():
            r = child(f"print(json.dumps(ingest_once('finance', {args.pdf!r}, {str(root / 'pdf' / 'finance')!r})))")
            print(f"one filing end to end ({Path(args.pdf).name}): {r}")
        if "answer" not in skip:
            r = child(f"print(json.dumps(answer_speed({args.pack!r}, {str(index)!r}, {args.runs})))")
            print(f"answer (warm, 5 passages, filter on): {r}")
            if r.get("ttft_p50_s") and r.get("bare_ttft_p50_s"):
                print(f"  ratio TTFT slmrag / bare llama.cpp: {r['ttft_p50_s'] / r['bare_ttft_p50_s']:.2f}x")
        if "cold" not in skip:
            q = (QUESTIONS.get(args.pack) or QUESTIONS["medical"])[0]
            runs = [cold_start(args.pack, str(index.parent), q) for _ in range(3)]
            print(f"cold start `slmrag ask` to first byte: {runs}; p50 "
                  f"{statistics.median(r['first_byte_s'] for r in runs):.2f}s")
        if "memory" not in skip:
            print(f"UI-equivalent process, one pack loaded: {child(f'print(json.dumps(ui_memory({args.pack!r}, {str(index)!r})))')}")
        if "bigpdf" not in skip:
            for pages in (max(args.pages // 10, 1), args.pages):
                pdf = root / f"big{pages}.pdf"
                make_pdf(pdf, pages)
                r = child(f"print(json.dumps(big_pdf({str(pdf)!r}, {str(root / f'big{pages}' / 'finance')!r})))")
                print(f"{pages}-page PDF ({pdf.stat().st_size / 1e6:.1f} MB): {r}")


if __name__ == "__main__":
    main()
