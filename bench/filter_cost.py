#!/usr/bin/env python
"""Time the pack's relevance filter on its top-10 candidates per question; prints p50/p95 ms, asserts nothing.

    python bench/filter_cost.py --pack medical --index-dir DIR --questions Q.jsonl [--limit 50] [--kind cross_encoder]

Retrieval is timed apart: only ``filter.score`` over the 10 candidates is measured (after one warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.assistant import AskOptions, Assistant  # noqa: E402
from app.evaluation.questions import load_questions, scope  # noqa: E402
from app.packs import load_pack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--index-dir", type=Path, required=True)
    ap.add_argument("--questions", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--kind", default=None, help="filter kind (default: the pack's)")
    args = ap.parse_args()
    pack = load_pack(args.pack, args.index_dir)
    a = Assistant(pack).load(generator=False)
    kind = args.kind or pack.config.filter.kind
    choice = a.filter_choice(AskOptions(filter=kind))
    qs = load_questions(args.questions, args.limit)
    cands = [(q["question"], a.retriever.search(q["question"], 10, doc=scope(q)), a.embedder.encode_query(q["question"]))
             for q in qs]
    fewer = sum(len(passages) < 10 for _, passages, _ in cands)
    # A question scoped to a short document has fewer candidates: timed on 10 only, as the figure says.
    cands = [c for c in cands if len(c[1]) == 10]
    if not cands:
        sys.exit("no question has 10 candidates: pass questions over longer documents")
    a.judge(cands[0][0], cands[0][1], choice, cands[0][2])  # warm-up: model load, first allocation
    ms, scored = [], 0
    for question, passages, qvec in cands:
        t = time.perf_counter()
        a.judge(question, passages, choice, qvec)
        ms.append((time.perf_counter() - t) * 1000)
        scored += sum(p.filter_score is not None for p in passages)
    ms.sort()
    print(f"{pack.name} {kind} ({pack.config.filter.precision}): {len(ms)} questions x 10 candidates: "
          f"p50 {statistics.median(ms):.1f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms"
          + f"; the filter's own model scored {scored / len(ms):.1f} of 10 per question"
          + (f" ({fewer} with fewer candidates left out)" if fewer else ""))


if __name__ == "__main__":
    main()
