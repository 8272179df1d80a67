#!/usr/bin/env python
"""Run `slmrag eval` over the three dev sets (medical, legal, finance) and print one summary table.

    python bench/run_eval_all.py [--limit N] [--no-answers] [--max-tokens N] [--out DIR] [--domains medical,legal]

The data folder is ``../shared/data`` next to the checkout (``Path(__file__).parents[2] / 'shared' / 'data'``)
or ``$SLMRAG_DATA``. Each domain runs as its own ``slmrag eval`` process (so its peak memory is its own),
against the pack of the same name, with the domain's corpus ingested into a scratch index. Reports go to
``--out/<domain>/`` (default ``bench/out/``, ignored by git): results are re-measured, never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

DOMAINS = ("medical", "legal", "finance")


def data_dir() -> Path:
    env = os.environ.get("SLMRAG_DATA")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _get(d, path: str):
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _f(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


# (column, slmrag path, naive path or None, digits); "s/n" columns show slmrag / naive
COLUMNS = [
    ("R@1", "retrieval.recall@1", "retrieval.recall@1", 3),
    ("R@5", "retrieval.recall@5", "retrieval.recall@5", 3),
    ("R@10", "retrieval.recall@10", "retrieval.recall@10", 3),
    ("MRR", "retrieval.mrr", "retrieval.mrr", 3),
    ("R@5 filt", "after_filter.recall@5", None, 3),
    ("gold kept", "filter.gold_kept_rate", None, 3),
    ("non-gold drop", "filter.nongold_dropped_rate", None, 3),
    ("gold in ctx", "gold_in_context", "gold_in_context", 3),
    ("accuracy", "answers.accuracy", "answers.accuracy", 3),
    ("abstain", "answers.abstention_rate", "answers.abstention_rate", 3),
    ("total p50 s", "latency.total_s.p50", "latency.total_s.p50", 2),
    ("tok/s", "tokens_per_s.mean", "tokens_per_s.mean", 0),
]


def summary_table(reports: dict[str, dict]) -> str:
    header = ["domain", "n", "wall s"] + [c[0] + (" s/n" if c[2] else " s") for c in COLUMNS] + \
             ["ingest ch/s s/n", "peak MB"]
    rows = []
    for domain, rep in reports.items():
        agg = rep["aggregates"]["all"]
        row = [domain, str(agg["n"]), _f(rep["meta"]["wall_s"], 0)]
        for _, s_path, n_path, digits in COLUMNS:
            s = _f(_get(agg["slmrag"], s_path), digits)
            row.append(f"{s} / {_f(_get(agg['naive'], n_path), digits)}" if n_path else s)
        ing = rep["meta"]["ingest"]
        row.append(f"{_f(_get(ing, 'slmrag.chunks_per_s'), 1)} / {_f(_get(ing, 'naive.chunks_per_s'), 1)}")
        row.append(_f(_get(rep["meta"], "memory.peak_mb"), 0))
        rows.append(row)
    # Drop columns nobody has (e.g. answer columns of a --no-answers run).
    keep = [i for i in range(len(header)) if any(r[i].replace("—", "").replace("/", "").strip() for r in rows)]
    header = [header[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="questions per domain (default: all)")
    ap.add_argument("--no-answers", action="store_true", help="retrieval metrics only")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out",
                    help="reports go to OUT/<domain>/ (default bench/out/, ignored by git)")
    ap.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated subset of " + ",".join(DOMAINS))
    args = ap.parse_args(argv)

    data = data_dir()
    if not data.is_dir():
        print(f"error: no data folder at {data}; set SLMRAG_DATA to the folder holding medical/ legal/ finance/",
              file=sys.stderr)
        return 2
    reports: dict[str, dict] = {}
    commands: list[str] = []
    failed = []
    for domain in [d.strip() for d in args.domains.split(",") if d.strip()]:
        out = args.out / domain
        cmd = [sys.executable, "-m", "app.cli", "eval", "--pack", domain,
               "--questions", str(data / domain / "questions.jsonl"), "--corpus", str(data / domain / "corpus"),
               "--out", str(out)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.no_answers:
            cmd.append("--no-answers")
        if args.max_tokens:
            cmd += ["--max-tokens", str(args.max_tokens)]
        shown = "slmrag " + " ".join(shlex.quote(c) for c in cmd[3:])
        commands.append(shown)
        print(f"\n=== {domain}: {shown}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=Path(__file__).resolve().parents[1])
        print(f"=== {domain}: exit {rc} after {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if rc != 0 or not (out / "report.json").exists():
            failed.append(domain)
            continue
        reports[domain] = json.loads((out / "report.json").read_text())

    if reports:
        print("\nslmrag vs naive RAG (cells: slmrag / naive; 'filt' = after the relevance filter)\n")
        print(summary_table(reports))
        print("\ncommands:\n" + "\n".join(f"  {c}" for c in commands))
        print(f"reports: {args.out}/<domain>/report.md")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
