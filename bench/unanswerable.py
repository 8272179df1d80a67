#!/usr/bin/env python
"""In-domain questions whose answer is not in the documents: does the pack abstain (or flag), and does it
still answer the answerable ones? Prints rates, asserts nothing.

    python bench/unanswerable.py --pack legal --index-dir DEV_INDEX --dev DEV.jsonl --other TRAIN.jsonl [--n 15]

``--other``: questions of the same domain about documents that are *not* in the index (for the shipped
legal and finance dev sets: the ``train/`` rows, whose documents are disjoint from the dev corpus). Rows
whose document is in the index are skipped; for medical that is every training row (its PubMedQA training
abstracts are the dev corpus's distractor abstracts, its COVID-QA rows ask about the dev articles), so
medical needs an index built without some documents whose questions are then asked. Their questions are
asked corpus-wide, as a user would ask them. ``--dev`` questions are answerable from the index (asked in their own document when
``doc_scoped``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.assistant import Assistant, AskOptions  # noqa: E402
from app.evaluation.questions import load_questions, scope  # noqa: E402
from app.packs import load_pack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--index-dir", type=Path, required=True)
    ap.add_argument("--dev", type=Path, required=True)
    ap.add_argument("--other", type=Path, required=True)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pack = load_pack(args.pack, args.index_dir)
    indexed = None
    a = Assistant(pack).load()
    indexed = {d.name for d in a.snapshot.documents.values()}
    other = [q for q in load_questions(args.other) if q.get("doc") not in indexed]
    if not other:
        sys.exit(f"error: every --other question in {args.other} is about a document in the index at "
                 f"{args.index_dir}, so none is unanswerable there. Ingest the corpus without some documents "
                 "and pass the questions about those (see this script's docstring).")
    dev = load_questions(args.dev)
    runs = {"unanswerable": rng.sample(other, min(args.n, len(other))), "answerable": rng.sample(dev, min(args.n, len(dev)))}
    out = {}
    for kind, qs in runs.items():
        how = Counter()
        records = []
        for q in qs:
            doc = scope(q) if kind == "answerable" else None
            ans = a.ask(q["question"], AskOptions(doc=doc)).run()
            outcome = "abstained" if ans.abstained else ("flagged" if ans.grounded is False else "answered")
            how[outcome] += 1
            how[f"decided_by:{ans.decided_by}"] += 1
            records.append({"id": q.get("id"), "source": q.get("source"), "question": q["question"], "outcome": outcome,
                            "decided_by": ans.decided_by, "answer": ans.answer, "support": ans.support,
                            "details": ans.details})
        out[kind] = {"n": len(qs), "abstained_or_flagged": (how["abstained"] + how["flagged"]) / max(1, len(qs)),
                     **dict(how), "records": records}
        print(f"{pack.name} {kind}: n={len(qs)} abstained/flagged {out[kind]['abstained_or_flagged']:.2f} {dict(how)}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
