"""Benchmark retrieval and the relevance filters on the real dev sets; prints figures, asserts nothing.

    python bench/bench_filter.py [--limit 40] [--domains medical,legal,finance]
                                 [--filters cosine,cross_encoder,slm_judge] [--slm-limit 10] [--json out.json]

Per domain (``../shared/data/<domain>``): the corpus is ingested into a scratch index under
``--cache`` (default /tmp/slmrag_bench; unchanged files are skipped on reruns), ``--limit`` questions
are sampled (seeded), and

* retrieval: recall@5 and MRR@10 for dense only, BM25 only and hybrid (doc-scoped questions, i.e.
  TAT-QA, are searched within their own document, as the data README advises);
* filters on the 10 hybrid candidates of each question: AUC (gold vs non-gold passages), share of
  gold kept and of non-gold dropped at a threshold calibrated to keep >= 95 % of gold (2-fold
  cross-fitted: each half is scored with the threshold chosen on the other half), and ms per query;
  the cross-encoder is trained on the scratch index first (cached; --retrain to redo);
* abstention: ``--limit`` questions from the *other* domains asked of this pack (their answers are not
  in its index) should abstain, i.e. all 10 candidates score below the threshold; answerable in-pack
  questions (gold among the candidates) should not. Both rates at the 95 %-gold threshold, and at the
  highest threshold whose false abstention stays <= 10 % ("abst@10%").
* ``--answers N``: answer-level effect on N PubMedQA questions (medical): label accuracy of the pack's
  generator with no filter vs with each filter at its calibrated threshold.

The machine's 2 cores are shared: ms/query is wall-clock and includes contention; the CPU time the
process used (all its threads) is shown next to it. SLMRAG_THREADS sets the threads of torch and llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import app  # noqa: E402,F401
from app.assistant import Assistant, AskOptions  # noqa: E402
from app.evaluation.calibration import auc, choose_threshold, rates  # noqa: E402
from app.evaluation.metrics import extract_label, reciprocal_rank, recall_at_k  # noqa: E402
from app.evaluation.questions import holds_evidence, load_questions, scope  # noqa: E402
from app.filters.cross_encoder import cross_encoder_dir  # noqa: E402
from app.packs import load_pack  # noqa: E402
from app.training.cross_encoder import TRAIN_INFO, train_cross_encoder  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOMAINS = ("medical", "legal", "finance")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sample(questions: list[dict], n: int, seed: int = 0) -> list[dict]:
    if n >= len(questions):
        return list(questions)
    idx = sorted(random.Random(seed).sample(range(len(questions)), n))
    return [questions[i] for i in idx]


def scratch_pack(domain: str, cache: Path):
    pack = load_pack(domain).with_index_dir(cache / "idx" / domain)
    from ingest.ingestor import Ingestor

    t = time.perf_counter()
    summary = Ingestor(pack).ingest([DATA / domain / "corpus"])
    if summary.added or summary.updated:
        log(f"[{domain}] ingested {len(summary.added) + len(summary.updated)} files, {summary.chunks} chunks "
            f"in {time.perf_counter() - t:.0f}s")
    return pack


def retrieval_metrics(retriever, questions: list[dict], k: int = 10) -> dict:
    out = {}
    for mode in ("dense", "bm25", "hybrid"):
        r5, mrr = [], []
        for q in questions:
            hits = [holds_evidence(p, q) for p in retriever.search(q["question"], k, doc=scope(q), mode=mode)]
            r5.append(recall_at_k(hits, 5))
            mrr.append(reciprocal_rank(hits))
        out[mode] = {"recall@5": statistics.mean(r5), "mrr@10": statistics.mean(mrr)}
    return out


def cross_fit(per_q: list[tuple[list[float], list[bool]]], keep: float = 0.95) -> dict:
    """Gold kept / non-gold dropped / false abstention with thresholds chosen on the other half."""
    folds = [per_q[0::2], per_q[1::2]]
    gk, nd, fa = [], [], []
    for i in (0, 1):
        train, test = folds[1 - i], folds[i]
        gold_train = [s for sc, gl in train for s, g in zip(sc, gl) if g]
        if not gold_train:
            continue
        t = choose_threshold(gold_train, keep=keep)
        gk += [s >= t for sc, gl in test for s, g in zip(sc, gl) if g]
        nd += [s < t for sc, gl in test for s, g in zip(sc, gl) if not g]
        fa += [max(sc) < t for sc, gl in test if any(gl)]
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"cf_gold_kept": mean(gk), "cf_nongold_dropped": mean(nd), "cf_false_abstention": mean(fa)}


def bench_domain(domain: str, args, all_questions: dict[str, list[dict]]) -> dict:
    cache = Path(args.cache)
    pack = scratch_pack(domain, cache)
    assistant = Assistant(pack)
    assistant.load(generator=False)
    retriever = assistant.retriever
    qs = sample(all_questions[domain], args.limit, args.seed)
    others = [q for d in DOMAINS if d != domain for q in sample(all_questions[d], max(1, args.limit // 2), args.seed + 1)]
    result: dict = {"domain": domain, "questions": len(qs), "out_of_pack": len(others),
                    "chunks": assistant.snapshot.n_chunks}
    t = time.perf_counter()
    result["retrieval"] = retrieval_metrics(retriever, qs)
    log(f"[{domain}] retrieval metrics in {time.perf_counter() - t:.0f}s")

    cands = [retriever.search(q["question"], args.k, doc=scope(q)) for q in qs]
    gold = [[holds_evidence(p, q) for p in c] for q, c in zip(qs, cands)]
    ood_cands = [retriever.search(q["question"], args.k) for q in others]
    result["answerable"] = sum(any(g) for g in gold)

    filters = {}
    for kind in args.filters:
        if kind == "cross_encoder":
            model_dir = cross_encoder_dir(pack.index_dir)
            info = model_dir / TRAIN_INFO
            stale = not info.exists() or json.loads(info.read_text()).get("index_generation") != assistant.snapshot.generation
            if args.retrain or stale:
                t = time.perf_counter()
                steps = [0, 0]

                def tick(step, total, loss):
                    steps[:] = [step, total]
                    if step % 10 == 0 or step == total:
                        log(f"[{domain}] cross-encoder step {step}/{total} loss {loss:.3f}")

                rep = train_cross_encoder(assistant.snapshot, model_dir, max_queries=args.train_queries,
                                          seed=args.seed, progress=tick)
                result["cross_encoder_training"] = rep.to_json()
                log(f"[{domain}] trained cross-encoder: {rep.pairs} pairs, {rep.steps} steps, {rep.seconds:.0f}s")
            else:
                result["cross_encoder_training"] = json.loads(info.read_text())
        if kind.startswith("slm_judge"):
            assistant.generator.load()
        if kind == "slm_judge_pf":  # the judge with the passage before the question (no shared prefix)
            from app.filters.slm_judge import SLMJudgeFilter

            filters[kind] = SLMJudgeFilter(assistant.generator, question_first=False)
            continue
        filters[kind] = assistant.relevance_filter(kind)

    result["filters"] = {}
    for kind, filt in filters.items():
        n = min(len(qs), args.slm_limit) if kind.startswith("slm_judge") else len(qs)
        n_ood = min(len(others), args.slm_limit) if kind.startswith("slm_judge") else len(others)
        filt.score("warm-up question", cands[0][:1]) if cands and cands[0] else None
        t = time.perf_counter()
        cpu = time.process_time()
        scores = [filt.score(q["question"], c) if c else [] for q, c in zip(qs[:n], cands[:n])]
        elapsed = time.perf_counter() - t
        cpu = time.process_time() - cpu
        n_passages = sum(len(c) for c in cands[:n])
        ood_scores = [filt.score(q["question"], c) if c else [] for q, c in zip(others[:n_ood], ood_cands[:n_ood])]
        per_q = [(s, g) for s, g in zip(scores, gold[:n]) if s]
        g_scores = [x for s, g in per_q for x, y in zip(s, g) if y]
        o_scores = [x for s, g in per_q for x, y in zip(s, g) if not y]
        row = {"n": n, "n_ood": n_ood, "auc": auc(g_scores, o_scores),
               "ms_per_query": 1000 * elapsed / max(1, n) * (args.k / max(1, n_passages / max(1, n))),
               "cpu_ms_per_query": 1000 * cpu / max(1, n) * (args.k / max(1, n_passages / max(1, n)))}
        if g_scores:
            thr = choose_threshold(g_scores, keep=0.95)
            kept, dropped = rates(g_scores, o_scores, thr)
            in_max = [max(s) for s, g in per_q if any(g)]
            ood_max = [max(s) for s in ood_scores if s]
            thr_abst = choose_threshold(in_max, keep=0.90) if in_max else float("nan")
            row.update({
                "threshold": thr, "gold_kept": kept, "nongold_dropped": dropped,
                "false_abstention": float(np.mean([m < thr for m in in_max])) if in_max else float("nan"),
                "oop_abstention": float(np.mean([m < thr for m in ood_max])) if ood_max else float("nan"),
                "threshold_abst10": thr_abst,
                "oop_abstention_at_abst10": float(np.mean([m < thr_abst for m in ood_max])) if ood_max else float("nan"),
                **cross_fit(per_q),
            })
        result["filters"][kind] = row
        log(f"[{domain}] {kind}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})}")

    if args.answers and domain == "medical":
        result["answers"] = answer_effect(assistant, all_questions[domain], result["filters"], args)
    return result


def answer_effect(assistant, questions: list[dict], filter_rows: dict, args) -> dict:
    pqa = [q for q in questions if q.get("source") == "pubmedqa"]
    pqa = sample(pqa, args.answers, args.seed + 2)
    assistant.generator.load()
    out = {}
    settings = [("none", None)] + [(k, r.get("threshold")) for k, r in filter_rows.items() if r.get("threshold") is not None]
    for kind, thr in settings:
        correct, abstained, first = [], 0, []
        for q in pqa:
            ans = assistant.ask(q["question"], AskOptions(k=5, filter=kind, threshold=thr, max_tokens=args.answer_tokens)).run()
            abstained += ans.abstained
            correct.append(extract_label(ans.answer) == q["answer"])
            first.append(ans.timings["first_token_s"])
        out[kind] = {"accuracy": float(np.mean(correct)), "abstained": abstained, "n": len(pqa),
                     "first_token_s_median": statistics.median(first)}
        log(f"[medical] answers with filter {kind}: {out[kind]}")
    return out


def pct(x) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}"


def print_tables(results: list[dict]) -> None:
    print("\n## Retrieval (10 candidates; recall@5 / MRR@10)\n")
    print("| domain | questions | chunks | dense R@5 | dense MRR | BM25 R@5 | BM25 MRR | hybrid R@5 | hybrid MRR |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["retrieval"]
        print(f"| {r['domain']} | {r['questions']} | {r['chunks']} | " + " | ".join(
            f"{m[mode]['recall@5']:.3f} | {m[mode]['mrr@10']:.3f}" for mode in ("dense", "bm25", "hybrid")) + " |")
    print("\n## Filters on the 10 hybrid candidates (threshold keeps >= 95 % of gold; cf = 2-fold cross-fitted)\n")
    print("| domain | filter | n q | AUC | threshold | gold kept % | non-gold dropped % | cf gold kept % | "
          "cf non-gold dropped % | ms/query (cpu ms) | out-of-pack abstention % | false abstention % | "
          "thr abst@10% | out-of-pack abst. @ that thr % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for kind, f in r["filters"].items():
            thr = f.get("threshold")
            ta = f.get("threshold_abst10")
            print(f"| {r['domain']} | {kind} | {f['n']} | {f['auc']:.3f} | {'' if thr is None else f'{thr:.4f}'} | "
                  f"{pct(f.get('gold_kept'))} | {pct(f.get('nongold_dropped'))} | {pct(f.get('cf_gold_kept'))} | "
                  f"{pct(f.get('cf_nongold_dropped'))} | {f['ms_per_query']:.0f} ({f['cpu_ms_per_query']:.0f}) | {pct(f.get('oop_abstention'))} | "
                  f"{pct(f.get('false_abstention'))} | {'' if ta is None else f'{ta:.4f}'} | "
                  f"{pct(f.get('oop_abstention_at_abst10'))} |")
    for r in results:
        if "answers" in r:
            print("\n## Answer-level effect, PubMedQA yes/no/maybe label accuracy (medical)\n")
            print("| filter | n | accuracy % | abstained | median first token s |")
            print("|---|---|---|---|---|")
            for kind, a in r["answers"].items():
                print(f"| {kind} | {a['n']} | {pct(a['accuracy'])} | {a['abstained']} | {a['first_token_s_median']:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40, help="Questions per domain (and half as many per other domain for abstention).")
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument("--filters", default="cosine,cross_encoder,slm_judge",
                    help="Comma list of none/cosine/cross_encoder/slm_judge, and slm_judge_pf (the judge with the "
                    "passage before the question, to compare prompt orders).")
    ap.add_argument("--slm-limit", type=int, default=10, help="Questions scored by the (slow) SLM judge per domain.")
    ap.add_argument("--k", type=int, default=10, help="Candidates per question.")
    ap.add_argument("--train-queries", type=int, default=400, help="Pseudo-questions for the cross-encoder.")
    ap.add_argument("--retrain", action="store_true", help="Train the cross-encoders again even if cached.")
    ap.add_argument("--answers", type=int, default=0, help="PubMedQA questions for the answer-level effect (0 = skip).")
    ap.add_argument("--answer-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/tmp/slmrag_bench", help="Scratch indexes live here (reused across runs).")
    ap.add_argument("--json", type=Path, default=None, help="Also write all figures to this JSON file.")
    args = ap.parse_args(argv)
    args.filters = [f for f in args.filters.split(",") if f]
    domains = [d for d in args.domains.split(",") if d]
    all_questions = {d: load_questions(DATA / d / "questions.jsonl") for d in DOMAINS}
    t0 = time.perf_counter()
    results = [bench_domain(d, args, all_questions) for d in domains]
    print_tables(results)
    print(f"\n(total {time.perf_counter() - t0:.0f}s; command: python bench/bench_filter.py "
          f"{' '.join(sys.argv[1:] if argv is None else argv)})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
