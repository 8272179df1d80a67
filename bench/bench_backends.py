"""Benchmark the generator backends and ingestion on 2 CPU cores; prints figures, asserts nothing.

    python bench/bench_backends.py [--corpus ../shared/data/legal/corpus] [--runs 3]

For each backend (llamacpp, transformers) it reports load time (cold, then cached), time to first token
for a question with 5 retrieved passages, decode tokens/s, and the process's peak RSS; it also times a
bare llama.cpp call on the same prompt so slmrag's own overhead is visible, and ingestion chunks/s.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import app  # noqa: E402,F401
from app.packs import load_pack  # noqa: E402
from app.assistant import Assistant, AskOptions  # noqa: E402
from ingest.ingestor import Ingestor  # noqa: E402

QUESTION = "How much notice is needed to terminate the agreement for convenience?"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_ingest(corpus: Path, index: Path) -> dict:
    pack = load_pack("legal", index)
    t = time.perf_counter()
    s = Ingestor(pack).ingest([corpus])
    wall = time.perf_counter() - t
    return {"files": len(s.added), "failed": len(s.failed), "chunks": s.chunks, "pages": s.pages,
            "seconds": round(wall, 1), "chunks_per_s": round(s.chunks / wall, 1)}


def bench_backend(backend: str, index: Path, runs: int) -> dict:
    pack = load_pack("legal", index)
    pack.config.generator.backend = backend
    a = Assistant(pack)
    t = time.perf_counter()
    a.load()
    load_s = time.perf_counter() - t
    ttft, tps = [], []
    for i in range(runs):
        stream = a.ask(QUESTION, AskOptions(k=5, max_tokens=64, filter="none"))
        ans = stream.run()
        ttft.append(ans.timings["first_token_s"])
        if ans.timings["tokens_per_s"]:
            tps.append(ans.timings["tokens_per_s"])
    prompt_tokens = a.generator.count_tokens("\n".join(m["content"] for m in a.prompts.messages(QUESTION, stream.context)))
    return {"backend": backend, "load_s": round(load_s, 2), "prompt_tokens": prompt_tokens,
            "ttft_p50_s": round(statistics.median(ttft), 3), "decode_tok_s": round(statistics.median(tps), 1) if tps else None}


def bare_llamacpp(index: Path) -> dict:
    """The plain library call on the same prompt: what slmrag's overhead is measured against."""
    pack = load_pack("legal", index)
    a = Assistant(pack).load()
    stream = a.ask(QUESTION, AskOptions(k=5, max_tokens=1, filter="none"))
    stream.run()
    msgs = a.prompts.messages(QUESTION, stream.context)
    llm = a.generator.llm
    llm.reset()
    t = time.perf_counter()
    first = None
    n = 0
    for part in llm.create_chat_completion(messages=msgs, stream=True, max_tokens=64, temperature=0.0):
        if part["choices"][0].get("delta", {}).get("content"):
            first = first or time.perf_counter()
            n += 1
    end = time.perf_counter()
    return {"bare_ttft_s": round(first - t, 3), "bare_decode_tok_s": round((n - 1) / (end - first), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(REPO.parent / "shared" / "data" / "legal" / "corpus"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backends", default="llamacpp,transformers")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "legal"
        ing = bench_ingest(Path(args.corpus), index)
        print(f"ingest: {ing}")
        for backend in args.backends.split(","):
            # a fresh process per backend so load times and peak memory are not mixed
            code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from bench.bench_backends import *; "
                    f"r = bench_backend({backend!r}, Path({str(index)!r}), {args.runs}); r['peak_rss_mb'] = round(rss_mb()); print(r)")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"{backend}: failed\n{out.stderr[-2000:]}")
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from bench.bench_backends import *; "
                f"print(bare_llamacpp(Path({str(index)!r})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr[-2000:])


if __name__ == "__main__":
    main()
