#!/usr/bin/env python
"""How often the answers read off a table answer, and how often they are right, on a question set with gold
documents: each question is asked of its gold document as the only passage (retrieval and the filter left
out, so only the table reading is measured) - the one-cell lookup (``answers.table_lookup``) for questions
the pack does not route to ``calculate``, and for those it does the calculations in compose's order
(``app.answers.tables.read_tables``: the fixed form, a ratio of ``answers.ratios``, a metric the question
defines, a line item's share of another). All read rows with the pack's ``answers.row_names``. Prints counts and the wrong lookups, asserts nothing. Tune on training
rows, never on dev.

    python bench/table_lookup.py --pack finance --questions ../shared/data/finance/train [--show 20]

``--questions``: a folder with ``questions.jsonl`` (TAT-QA-style rows: ``answer`` / ``answer_raw``,
``scale``) and ``corpus/``. A lookup or a calculation is right when its figure matches the gold within 0.5 %
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
from app.answers.arithmetic import evaluate  # noqa: E402
from app.answers.tables import read_tables, table_value  # noqa: E402
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
        doc = [(args.questions / "corpus" / q["doc"]).read_text(encoding="utf-8")]
        raw = q.get("answer_raw")
        gold = " ".join(map(str, raw)) if isinstance(raw, list) else str(raw if raw not in (None, "") else q["answer"])
        scale = q.get("scale") if isinstance(q.get("scale"), str) and q.get("scale") else None
        if route(q["question"], answers.route, answers.shapes, answers.default) == "calculate":
            counts["calc_asked"] += 1
            calc, _ = read_tables(q["question"], doc, "calculate", answers)  # as compose reads them
            if calc is not None:
                counts["calc_answered"] += 1
                counts["calc_right"] += numbers_match(f"{evaluate(calc.formula).value}", gold, scale=scale, rel_tol=0.005)
            continue
        counts["asked"] += 1
        cell = table_value(q["question"], doc, row_names=answers.row_names)
        if cell is None:
            continue
        ok = numbers_match(cell.cell, gold, scale=scale, rel_tol=0.005)
        counts["right" if ok else "wrong"] += 1
        if not ok:
            wrong.append(f"  {q['question']}\n    gold {gold!r}; read {cell.cell!r} from row {cell.row!r}, {cell.year}")
    answered = counts["right"] + counts["wrong"]
    print(f"{counts['asked']} questions not routed to calculate; the lookup answered {answered} "
          f"({answered / max(counts['asked'], 1):.1%}): {counts['right']} right, {counts['wrong']} wrong "
          f"(precision {counts['right'] / max(answered, 1):.1%})")
    print(f"{counts['calc_asked']} questions routed to calculate; the table calculations answered "
          f"{counts['calc_answered']}: {counts['calc_right']} right "
          f"(precision {counts['calc_right'] / max(counts['calc_answered'], 1):.1%})")
    if wrong and args.show:
        print(f"wrong (first {min(args.show, len(wrong))}):")
        print("\n".join(wrong[:args.show]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
