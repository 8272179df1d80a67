#!/usr/bin/env python
"""Decode speed and time to first token with the pack's LoRA adapter vs the base model (issue 14's
"decoding with the adapter >= 0.85 x the base model's tokens/s in the same run; time to first token not
worse than 2.8 s p50").

    python bench/adapter_speed.py --pack medical --questions Q.jsonl [--index-dir DIR] [--n 20] [--max-tokens 60]

Three generators (llama.cpp, the pack's GGUF) are loaded in this one process: the base model, the adapter
merged into the weights (``generator.adapter_merge``, the default) and the adapter applied at run time
(``adapter_merge: false``). They answer the *same* prompts - the pack's retrieval, filter and prompt for the
first ``--n`` questions that keep a passage - in an order that rotates per question, so drift in machine
load hits all alike. Time to first token is measured from the call to the first streamed piece (prefill of the passages
included), decode speed over the rest of the answer. Prints one JSON object; asserts nothing.
Run it alone: two cores shared with another job measure that job too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.assistant import AskOptions, Assistant  # noqa: E402
from app.evaluation.questions import load_questions, scope  # noqa: E402
from app.generators import make_generator  # noqa: E402
from app.packs import load_pack  # noqa: E402


def timed(gen, messages, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first, n = None, 0
    for _ in gen.stream(messages, max_tokens=max_tokens):
        if first is None:
            first = time.perf_counter()
        n += 1
    end = time.perf_counter()
    first = first or end
    return {"first_token_s": first - t0, "tokens": n,
            "decode_tok_s": (n - 1) / (end - first) if n > 1 and end > first else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--questions", type=Path, required=True)
    ap.add_argument("--index-dir", type=Path, help="the index to retrieve from (default: the pack's)")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=60)
    args = ap.parse_args()
    pack = load_pack(args.pack)
    if args.index_dir:
        pack = pack.with_index_dir(args.index_dir)
    if not pack.config.generator.adapter:
        raise SystemExit(f"pack {pack.name} has no generator.adapter to compare")
    assistant = Assistant(pack).load(generator=False)
    g = pack.config.generator
    gens = {"base": make_generator(g.model_copy(update={"adapter": None}), pack.path).load(),
            "adapted": make_generator(g.model_copy(update={"adapter_merge": True}), pack.path).load(),
            "adapted_runtime": make_generator(g.model_copy(update={"adapter_merge": False}), pack.path).load()}
    rows = {name: [] for name in gens}
    used = 0
    for q in load_questions(args.questions):
        if used >= args.n:
            break
        found = assistant.retrieve(q["question"], AskOptions(doc=scope(q)))
        if not found.kept:
            continue
        prompt = assistant.prompts.build(q["question"], found.kept, args.max_tokens, "free")
        names = list(gens)
        for name in names[used % 3:] + names[:used % 3]:
            rows[name].append(timed(gens[name], prompt.messages, args.max_tokens))
        used += 1
    out = {"pack": pack.name, "questions": used, "max_tokens": args.max_tokens,
           "threads": os.environ.get("SLMRAG_THREADS", "default"), "command": " ".join(sys.argv)}
    for name, rs in rows.items():
        ttft = sorted(r["first_token_s"] for r in rs)
        speeds = [r["decode_tok_s"] for r in rs if r["decode_tok_s"]]
        out[name] = {"first_token_p50_s": round(statistics.median(ttft), 3),
                     "first_token_p95_s": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))], 3),
                     "decode_tok_s_mean": round(statistics.fmean(speeds), 1) if speeds else None,
                     "tokens_mean": round(statistics.fmean(r["tokens"] for r in rs), 1)}
    for name, key in (("adapted", "decode_ratio"), ("adapted_runtime", "decode_ratio_runtime")):
        if out["base"]["decode_tok_s_mean"] and out[name]["decode_tok_s_mean"]:
            out[key] = round(out[name]["decode_tok_s_mean"] / out["base"]["decode_tok_s_mean"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
