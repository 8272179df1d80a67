#!/usr/bin/env python
"""How often the one-cell table lookup (``answers.table_lookup``) answers, and how often it is right, on a
question set with gold documents: each question that the pack does not route to ``calculate`` is asked of
its gold document as the only passage (retrieval and the filter left out, so only the lookup is measured).
Prints counts and the wrong cases, asserts nothing. Tune on training rows, never on dev.

    python bench/table_lookup.py --pack finance --questions ../shared/data/finance/train [--show 20]

``--questions``: a folder with ``questions.jsonl`` (TAT-QA-style rows: ``answer`` / ``answer_raw``,
``scale``) and ``corpus/``. A lookup is right when its cell matches the gold figure within 0.5 %
(scale-aware, as ``slmrag eval`` scores TAT-QA).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.answers.shapes import route  # noqa: E402
from app.answers.tables import table_value  # noqa: E402
from app.evaluation.metrics import numbers_match  # noqa: E402
from app.packs import load_pack  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", default="finance")
    ap.add_argument("--questions", required=True, type=Path, help="folder with questions.jsonl and corpus/")
    ap.add_argument("--show", type=int, default=20, help="print this many wrong lookups")
    args = ap.parse_args()
    answers = load_pack(args.pack).config.answers
    counts: Counter = Counter()
    wrong = []
    for line in (args.questions / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        if route(q["question"], answers.route, answers.shapes, answers.default) == "calculate":
            continue
        counts["asked"] += 1
        cell = table_value(q["question"], [(args.questions / "corpus" / q["doc"]).read_text(encoding="utf-8")])
        if cell is None:
            continue
        raw = q.get("answer_raw")
        gold = " ".join(map(str, raw)) if isinstance(raw, list) else str(raw if raw not in (None, "") else q["answer"])
        scale = q.get("scale") if isinstance(q.get("scale"), str) and q.get("scale") else None
        ok = numbers_match(cell.cell, gold, scale=scale, rel_tol=0.005)
        counts["right" if ok else "wrong"] += 1
        if not ok:
            wrong.append(f"  {q['question']}\n    gold {gold!r}; read {cell.cell!r} from row {cell.row!r}, {cell.year}")
    answered = counts["right"] + counts["wrong"]
    print(f"{counts['asked']} questions not routed to calculate; the lookup answered {answered} "
          f"({answered / max(counts['asked'], 1):.1%}): {counts['right']} right, {counts['wrong']} wrong "
          f"(precision {counts['right'] / max(answered, 1):.1%})")
    if wrong and args.show:
        print(f"wrong (first {min(args.show, len(wrong))}):")
        print("\n".join(wrong[:args.show]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
