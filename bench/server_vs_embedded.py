#!/usr/bin/env python
"""The same dev eval through an OpenAI-compatible server and embedded, side by side.

    # retrieval only, every question (the generator is not involved: the two must be identical)
    python bench/server_vs_embedded.py --pack medical --questions /work/shared/data/medical/questions.jsonl \\
        --index /work/evals/idxlinks/medical --out /tmp/serve-bench --no-answers
    # a small answered subset
    python bench/server_vs_embedded.py --pack medical --questions /work/shared/data/medical/questions.jsonl \\
        --index /work/evals/idxlinks/medical --out /tmp/serve-bench --limit 8

Steps: copy the kept index to a scratch folder (the original is never opened); write a copy of the pack whose
pack.yaml differs only in its generator section (backend openai, base_url, model, tokenizer); start
llama-cpp-python's server (`python -m llama_cpp.server`) on loopback with the very GGUF file the embedded
backend uses (the Q4_0 requantization in the cache); run `python -m app eval` for each pack with the same
options (`--no-adapter --no-naive`: the server serves the base model); compare the two report.json files
question by question. Prints the table and writes it to OUT/compare.md; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALIAS = "smollm2"


def served_pack(pack_dir: Path, dest: Path, base_url: str, logprobs: int | None) -> Path:
    """A copy of the pack whose pack.yaml points its generator at the server; nothing else changes."""
    shutil.copytree(pack_dir, dest, ignore=shutil.ignore_patterns("adapter", "corpus"))
    cfg = yaml.safe_load((dest / "pack.yaml").read_text())
    gen = cfg.setdefault("generator", {})
    gen.pop("adapter", None)  # served: the server would load it (--lora_path); this bench serves the base model
    gen.update(backend="openai", model=ALIAS, base_url=base_url, tokenizer="packaged:smollm2")
    if logprobs:
        gen["logprobs"] = logprobs
    (dest / "pack.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return dest


def run_eval(pack: str | Path, args, out: Path, index_root: Path) -> dict:
    cmd = [sys.executable, "-m", "app", "eval", "--pack", str(pack), "--questions", str(args.questions),
           "--out", str(out), "--no-adapter", "--no-naive", "--quiet"]
    if args.no_answers:
        cmd.append("--no-answers")
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    env = {**os.environ, "SLMRAG_INDEX_DIR": str(index_root)}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    report = json.loads((out / "report.json").read_text())
    report["_wall_s"] = time.perf_counter() - t
    print(f"$ SLMRAG_INDEX_DIR={index_root} {' '.join(cmd[1:])}   ({report['_wall_s']:.0f} s)", flush=True)
    return report


def get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


ROWS = [
    ("recall@1 (retrieved)", "retrieval.recall@1"), ("recall@5 (retrieved)", "retrieval.recall@5"),
    ("recall@10 (retrieved)", "retrieval.recall@10"), ("MRR (retrieved)", "retrieval.mrr"),
    ("recall@5 (after filter)", "after_filter.recall@5"), ("gold passage in prompt", "gold_in_context"),
    ("answer accuracy", "answers.accuracy"), ("label accuracy (pubmedqa)", "answers.label_accuracy"),
    ("text accuracy", "answers.text_accuracy"), ("token F1", "answers.token_f1"),
    ("abstained", "answers.abstention_rate"), ("grounded", "answers.grounded_rate"),
    ("withheld as unsupported", "answers.withheld_rate"),
    ("retrieve p50 s", "latency.retrieve_s.p50"), ("first token p50 s", "latency.first_token_s.p50"),
    ("first token p95 s", "latency.first_token_s.p95"), ("total p50 s", "latency.total_s.p50"),
    ("total p95 s", "latency.total_s.p95"), ("decode tok/s (mean)", "tokens_per_s.mean"),
]


def fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def compare(emb: dict, srv: dict) -> str:
    a, b = emb["aggregates"]["all"]["slmrag"], srv["aggregates"]["all"]["slmrag"]
    lines = ["| metric | embedded (llamacpp) | server (openai -> llama_cpp.server) |", "|---|---|---|"]
    for name, key in ROWS:
        if get(a, key) is not None or get(b, key) is not None:
            lines.append(f"| {name} | {fmt(get(a, key))} | {fmt(get(b, key))} |")
    lines.append(f"| eval wall time s | {emb['_wall_s']:.0f} | {srv['_wall_s']:.0f} |")
    ra = {r["id"]: r["slmrag"] for r in emb["records"]}
    rb = {r["id"]: r["slmrag"] for r in srv["records"]}
    ids = [i for i in ra if i in rb]

    def ranking(rec):
        return [(p["name"], p.get("page"), p["score"], p.get("filter_score"), p.get("kept")) for p in rec.get("passages", [])]

    same_retrieval = sum(ranking(ra[i]) == ranking(rb[i]) for i in ids)
    lines += ["", f"- questions compared: {len(ids)}; identical retrieved passages (name, page, fused score, filter "
              f"score, kept), in order: **{same_retrieval}/{len(ids)}**"]
    answered = [i for i in ids if "answer" in ra[i] and "answer" in rb[i]]
    if answered:
        same_text = sum(ra[i]["answer"] == rb[i]["answer"] for i in answered)
        labels = [i for i in answered if (ra[i].get("answer_info") or {}).get("shape") == "label"]
        same_label = sum((ra[i].get("answer_info") or {}).get("label") == (rb[i].get("answer_info") or {}).get("label")
                         for i in labels)
        lines.append(f"- identical answer text: {same_text}/{len(answered)}; same label on label questions: "
                     f"{same_label}/{len(labels)}")
        for i in answered:
            if ra[i]["answer"] != rb[i]["answer"]:
                lines += [f"  - `{i}` embedded: {ra[i]['answer'][:160]!r}", f"    server:   {rb[i]['answer'][:160]!r}"]
            sa = ((ra[i].get("answer_info") or {}).get("details") or {}).get("label_scores")
            sb = ((rb[i].get("answer_info") or {}).get("details") or {}).get("label_scores")
            if sa or sb:
                lines.append(f"  - `{i}` label scores embedded {sa} / server {sb}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", default="medical", help="a built-in pack name (its folder in domains/ is copied)")
    ap.add_argument("--questions", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True, help="a kept eval index for this pack and corpus "
                    "(`slmrag eval --corpus DIR --keep-index` writes OUT/index); copied, never modified")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--no-answers", action="store_true")
    ap.add_argument("--logprobs", type=int, default=None, help="generator.logprobs of the served pack")
    args = ap.parse_args()

    from app.generators import LlamaCppGenerator
    from app.local_server import LocalModelServer
    from app.packs import load_pack

    pack = load_pack(args.pack)
    tag = "retrieval" if args.no_answers else f"answers{args.limit or ''}" + (f"-lp{args.logprobs}" if args.logprobs else "")
    out = args.out.resolve() / tag
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    index_root = out / "indexes"
    shutil.copytree(args.index.resolve(), index_root / pack.name)
    gen = LlamaCppGenerator(pack.config.generator.model_copy(update={"adapter": None}), pack.path)
    model, _ = gen.weights_file()  # the file the embedded backend loads
    threads = int(os.environ.get("SLMRAG_THREADS") or os.cpu_count() or 1)
    with LocalModelServer(model, alias=ALIAS, threads=threads, n_ctx=pack.config.generator.n_ctx,
                          log=out / "server.log") as server:
        srv_pack = served_pack(pack.path, out / "served-pack" / pack.name, server.base_url, args.logprobs)
        print(f"server: {' '.join(server.command())}", flush=True)
        emb = run_eval(pack.name, args, out / "embedded", index_root)
        srv = run_eval(srv_pack, args, out / "server", index_root)
    table = compare(emb, srv)
    (out / "compare.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
