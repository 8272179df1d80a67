#!/usr/bin/env python
"""One table from `slmrag eval` reports: the base model, the adapted model and the naive baseline side by side.

    slmrag eval --pack medical --questions Q.jsonl --limit 40 --out OUT/base --no-adapter
    slmrag eval --pack medical --questions Q.jsonl --limit 40 --out OUT/adapted
    python bench/compare_answers.py OUT/base/report.json OUT/adapted/report.json [--md OUT/compare.md]

The naive column comes from the last report (every report runs it on the same questions). Prints the
answer metrics by source (app/evaluation/tasks.py), abstention, grounding, time to first token and decode
speed; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.evaluation.report import TASK_COLUMNS, _get, _md_table, fmt  # noqa: E402

EXTRA = [
    ("all", "abstained (answerable questions)", "answers.abstention_rate", "rate"),
    ("all", "grounded (of answers checked)", "answers.grounded_rate", "rate"),
    ("all", "withheld as unsupported", "answers.withheld_rate", "rate"),
    ("all", "first token p50 s", "latency.first_token_s.p50", "num"),
    ("all", "decode tok/s (mean)", "tokens_per_s.mean", "num"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path, help="report.json files, one per system variant")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args()
    reports = [json.loads(p.read_text()) for p in args.reports]
    names = [("adapted" if r["meta"]["pack"]["generator"].get("adapter") else "base") for r in reports]
    aggs = [r["aggregates"]["all"] for r in reports]
    header = ["source", "metric", *(f"slmrag {n}" for n in names), "naive"]
    rows = []
    for source, title, key, kind in TASK_COLUMNS:
        vals = [_get(a, f"slmrag.answers.tasks.{source}.{key}") for a in aggs]
        naive = _get(aggs[-1], f"naive.answers.tasks.{source}.{key}")
        if all(v is None for v in vals) and naive is None:
            continue
        rows.append([source, title, *(fmt(v, kind) for v in vals), fmt(naive, kind)])
    for source, title, path, kind in EXTRA:
        vals = [_get(a, f"slmrag.{path}") for a in aggs]
        rows.append([source, title, *(fmt(v, kind) for v in vals), fmt(_get(aggs[-1], f"naive.{path}"), kind)])
    meta = reports[-1]["meta"]
    lines = [f"pack `{meta['pack']['name']}`, {meta['questions_run']} questions of `{meta['questions_file']}`", ""]
    lines += _md_table(header, rows)
    text = "\n".join(lines)
    print(text)
    if args.md:
        args.md.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
