"""Aggregate evaluation records and write ``report.json``, ``report.md`` and the PNG plots.

The aggregation functions are pure (records in, numbers out) so they can be checked by hand; the
per-question scores themselves come from :mod:`app.evaluation.metrics`.

A record (one question) holds the question's fields plus, per system (``slmrag``, ``naive``), what
:mod:`app.evaluation.runner` measured: ``hits`` (evidence flags of the ranked passages at depth k),
``kept_hits`` (slmrag: the flags of the passages the filter kept, in rank order), ``filter`` counts,
``gold_in_context``, ``answer``/``score``/``abstained`` when answers were generated, and ``timings``;
or ``error`` when that system failed on the question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from app.evaluation.tasks import summarize as summarize_tasks
from app.evaluation.metrics import mean, percentile, recall_at_k, reciprocal_rank

SYSTEMS = ("slmrag", "naive")
KS = (1, 5, 10)
LATENCIES = ("retrieve_s", "filter_s", "first_token_s", "total_s")


# ---------------------------------------------------------------------------------------------- pure helpers
def recall_curve(hits_lists: list[list[bool]], max_k: int) -> list[float | None]:
    """Mean recall@k over questions for k = 1..max_k (a question with no passages counts as a miss)."""
    return [mean(recall_at_k(h, k) for h in hits_lists) for k in range(1, max_k + 1)]


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0 (a ratio to nothing is not a measurement)."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def rate(num: int, den: int) -> float | None:
    return num / den if den else None


def p50_p95(xs: Iterable[float | None]) -> dict:
    xs = list(xs)
    return {"p50": percentile(xs, 50), "p95": percentile(xs, 95), "n": sum(1 for x in xs if x is not None)}


def _ranking_block(hits_lists: list[list[bool]], max_k: int) -> dict:
    out: dict[str, Any] = {f"recall@{k}": mean(recall_at_k(h, k) for h in hits_lists) for k in KS}
    out["mrr"] = mean(reciprocal_rank(h) for h in hits_lists)
    out["curve"] = recall_curve(hits_lists, max_k)
    return out


def aggregate(records: list[dict], system: str, max_k: int = 10) -> dict:
    """All aggregate metrics of one system over ``records`` (see the module docstring for the fields)."""
    runs = [r[system] for r in records if system in r]
    ok = [s for s in runs if "error" not in s]
    out: dict[str, Any] = {"n": len(runs), "errors": len(runs) - len(ok)}
    # Errors count as misses for retrieval: the question was asked and nothing useful came back.
    hits_lists = [s.get("hits", []) for s in runs]
    out["retrieval"] = _ranking_block(hits_lists, max_k)
    if any("kept_hits" in s for s in ok):
        out["after_filter"] = _ranking_block([s.get("kept_hits", []) for s in runs], max_k)
        f = {key: sum(s["filter"][key] for s in ok if "filter" in s)
             for key in ("gold_kept", "gold_dropped", "nongold_kept", "nongold_dropped")}
        with_gold = [s for s in ok if any(s.get("hits", []))]
        out["filter"] = {
            **f,
            "gold_kept_rate": rate(f["gold_kept"], f["gold_kept"] + f["gold_dropped"]),
            "nongold_dropped_rate": rate(f["nongold_dropped"], f["nongold_kept"] + f["nongold_dropped"]),
            # Questions whose gold was retrieved and survived the filter (at least one gold passage kept).
            "questions_gold_kept": mean(any(s.get("kept_hits", [])) for s in with_gold),
            "kept_per_question": mean(sum(1 for p in s.get("passages", []) if p.get("kept")) for s in ok),
        }
    out["gold_in_context"] = mean(bool(s.get("gold_in_context")) for s in runs)

    answered = [s for s in ok if "score" in s]
    if answered:
        def kind_acc(kind: str) -> float | None:
            return mean(s["score"]["correct"] for s in answered if s["score"]["kind"] == kind)

        scored = [s["score"]["correct"] for s in answered]
        out["answers"] = {
            "n": len(answered),
            "n_by_kind": {k: sum(1 for s in answered if s["score"]["kind"] == k)
                          for k in ("label", "numeric", "text", "evidence")},
            # Errors count as wrong answers; "evidence" (CUAD "Yes") answers are not scored by text.
            "accuracy": mean(scored + [False] * out["errors"]) if any(c is not None for c in scored) else None,
            "label_accuracy": kind_acc("label"),
            "numeric_accuracy": kind_acc("numeric"),
            "text_accuracy": kind_acc("text"),
            "token_f1": mean(s["score"]["f1"] for s in answered if s["score"]["kind"] == "text"),
            "exact_match": mean(s["score"]["em"] for s in answered if s["score"]["kind"] == "text"),
            # Every question of the dev sets has a gold answer, so any abstention is on an answerable one.
            "abstention_rate": mean(bool(s.get("abstained")) for s in answered),
            "filter_abstention_rate": mean(s["abstained_filter"] for s in answered if "abstained_filter" in s),
            "grounded_rate": mean(s["answer_info"]["grounded"] for s in answered
                                  if s.get("answer_info", {}).get("grounded") is not None),
            "withheld_rate": mean(bool(s.get("answer_info", {}).get("withheld")) for s in answered),
            "tasks": summarize_tasks(answered),
        }
    timings = [s.get("timings", {}) for s in ok]
    out["latency"] = {key: p50_p95(t.get(key) for t in timings) for key in LATENCIES}
    tps = [t.get("tokens_per_s") for t in timings]
    # The mean of per-answer rates weighs a 3-token answer like a 60-token one, so two systems whose answers differ
    # in length differ in it without decoding any faster; "pooled" (every decoded token over all decode time) does not.
    decoded = [(t["tokens"] - 1, (t["tokens"] - 1) / t["tokens_per_s"]) for t in timings
               if t.get("tokens_per_s") and (t.get("tokens") or 0) > 1]
    pooled = round(sum(n for n, _ in decoded) / sum(s for _, s in decoded), 2) if decoded else None
    out["tokens_per_s"] = {"mean": mean(tps), "p50": percentile(tps, 50), "pooled": pooled}
    return out


def groups(records: list[dict]) -> dict[str, list[dict]]:
    """``all``; ``corpus-wide`` and ``doc-scoped`` when both kinds occur; ``source:<name>`` per source
    when there are several sources."""
    out = {"all": records}
    scoped = [r for r in records if r.get("doc_scoped")]
    if scoped:
        out["corpus-wide"] = [r for r in records if not r.get("doc_scoped")]
        out["doc-scoped"] = scoped
    sources = sorted({r.get("source", "") for r in records})
    if len(sources) > 1:
        for s in sources:
            out[f"source:{s}"] = [r for r in records if r.get("source", "") == s]
    return {k: v for k, v in out.items() if v}


def variant_systems(meta: dict) -> list[str]:
    """The variants' system names (``slmrag[base]`` ...), in the order they ran (:mod:`app.evaluation.variants`)."""
    return list(meta.get("variants") or {})


def build_report(meta: dict, records: list[dict]) -> dict:
    max_k = int(meta.get("k", 10))
    systems = ["slmrag", *variant_systems(meta), "naive"]
    aggregates = {}
    for name, recs in groups(records).items():
        aggregates[name] = {"n": len(recs), **{s: aggregate(recs, s, max_k) for s in systems}}
    return {"meta": meta, "aggregates": aggregates, "comparison": comparison(aggregates["all"], meta),
            "records": records}


# ---------------------------------------------------------------------------------------------- comparison
def _get(d: dict | None, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


# (label, path in the slmrag aggregate, path in the naive aggregate or None, format, better)
ROWS: list[tuple[str, str, str | None, str, str]] = [
    ("recall@1 (retrieved, before filter)", "retrieval.recall@1", "retrieval.recall@1", "rate", "higher"),
    ("recall@5 (retrieved, before filter)", "retrieval.recall@5", "retrieval.recall@5", "rate", "higher"),
    ("recall@10 (retrieved, before filter)", "retrieval.recall@10", "retrieval.recall@10", "rate", "higher"),
    ("MRR (before filter)", "retrieval.mrr", "retrieval.mrr", "rate", "higher"),
    ("recall@1 after filter", "after_filter.recall@1", None, "rate", "higher"),
    ("recall@5 after filter", "after_filter.recall@5", None, "rate", "higher"),
    ("recall@10 after filter", "after_filter.recall@10", None, "rate", "higher"),
    ("MRR after filter", "after_filter.mrr", None, "rate", "higher"),
    ("filter: gold passages kept", "filter.gold_kept_rate", None, "rate", "higher"),
    ("filter: non-gold passages dropped", "filter.nongold_dropped_rate", None, "rate", "higher"),
    ("filter: questions whose retrieved gold survives", "filter.questions_gold_kept", None, "rate", "higher"),
    ("gold evidence in the generator's context", "gold_in_context", "gold_in_context", "rate", "higher"),
    ("answer accuracy (all scored)", "answers.accuracy", "answers.accuracy", "rate", "higher"),
    ("  label accuracy (yes/no/maybe)", "answers.label_accuracy", "answers.label_accuracy", "rate", "higher"),
    ("  numeric accuracy", "answers.numeric_accuracy", "answers.numeric_accuracy", "rate", "higher"),
    ("  text accuracy (token F1 >= 0.5)", "answers.text_accuracy", "answers.text_accuracy", "rate", "higher"),
    ("  text token F1", "answers.token_f1", "answers.token_f1", "rate", "higher"),
    ("  text exact match", "answers.exact_match", "answers.exact_match", "rate", "higher"),
    ("abstention rate (answerable questions)", "answers.abstention_rate", "answers.abstention_rate", "rate", "lower"),
    ("retrieve p50", "latency.retrieve_s.p50", "latency.retrieve_s.p50", "s", "lower"),
    ("retrieve p95", "latency.retrieve_s.p95", "latency.retrieve_s.p95", "s", "lower"),
    ("filter p50", "latency.filter_s.p50", None, "s", "lower"),
    ("filter p95", "latency.filter_s.p95", None, "s", "lower"),
    ("first token p50", "latency.first_token_s.p50", "latency.first_token_s.p50", "s", "lower"),
    ("first token p95", "latency.first_token_s.p95", "latency.first_token_s.p95", "s", "lower"),
    ("total p50", "latency.total_s.p50", "latency.total_s.p50", "s", "lower"),
    ("total p95", "latency.total_s.p95", "latency.total_s.p95", "s", "lower"),
    ("tokens/s (mean of answers)", "tokens_per_s.mean", "tokens_per_s.mean", "num", "higher"),
    ("decode tokens/s (pooled: all tokens / all decode time)", "tokens_per_s.pooled", "tokens_per_s.pooled", "num", "higher"),
]


def comparison(agg_all: dict, meta: dict) -> list[dict]:
    """The side-by-side rows of the report: label, slmrag, naive, slmrag/naive, and which way is better.
    Rows where neither system has a value (e.g. label accuracy on a set without labels) are left out."""
    rows = []
    for label, s_path, n_path, fmt, better in ROWS:
        s = _get(agg_all.get("slmrag"), s_path)
        n = _get(agg_all.get("naive"), n_path) if n_path else None
        if s is None and n is None:
            continue
        rows.append({"metric": label, "slmrag": s, "naive": n, "ratio": ratio(s, n), "format": fmt, "better": better,
                     "variants": {v: _get(agg_all.get(v), s_path) for v in variant_systems(meta)}})
    ingest = meta.get("ingest") or {}
    for key, label in (("chunks_per_s", "ingest chunks/s"), ("pages_per_s", "ingest pages/s"),
                       ("chunks", "ingest chunks"), ("seconds", "ingest seconds")):
        s = _get(ingest.get("slmrag"), key)
        n = _get(ingest.get("naive"), key)
        if s is None and n is None:
            continue
        better = "lower" if key == "seconds" else ("higher" if key != "chunks" else "")
        rows.append({"metric": label, "slmrag": s, "naive": n, "ratio": ratio(s, n),
                     "format": "s" if key == "seconds" else "num", "better": better, "variants": {}})
    return rows


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "rate":
        return f"{value:.3f}"
    if kind == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


# ---------------------------------------------------------------------------------------------- markdown
def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


# (source, column title, path inside the source's task block, format)
TASK_COLUMNS = [
    ("pubmedqa", "label accuracy", "accuracy", "rate"), ("pubmedqa", "macro-F1", "macro_f1", "rate"),
    ("covid-qa", "token F1", "f1", "rate"), ("covid-qa", "exact match", "em", "rate"),
    ("cuad", "clause match (Jaccard >= .5)", "clause_match", "rate"), ("cuad", "value match", "value_match", "rate"),
    ("cuad", "value/clause match", "correct", "rate"),
    ("tat-qa", "exact match", "em", "rate"), ("tat-qa", "numeric F1", "f1", "rate"),
    ("financebench", "correct (1 % or phrase)", "correct", "rate"),
    ("hygiene", "answers citing a kept passage", "valid_citation", "rate"),
    ("hygiene", "sentences per answer", "sentences_per_answer", "num"),
    ("hygiene", "answers with a repeated sentence", "repeated_sentence_answers", "num"),
    ("hygiene", "quotes verbatim", "verbatim_quotes", "rate"),
    ("hygiene", "answers quoted by slmrag for the model", "quoted_for_model", "rate"),
]


def task_table(agg_all: dict, variants: list[str] = ()) -> list[str]:
    """The answer metrics by source and shape (issue 14), slmrag and its ``variants`` beside naive; empty
    without answers."""
    s_tasks, n_tasks = _get(agg_all, "slmrag.answers.tasks"), _get(agg_all, "naive.answers.tasks")
    if not s_tasks and not n_tasks:
        return []
    v_tasks = [_get(agg_all, f"{v}.answers.tasks") for v in variants]
    rows = []
    for source, title, key, kind in TASK_COLUMNS:
        sv, nv = _get(s_tasks, f"{source}.{key}"), _get(n_tasks, f"{source}.{key}")
        if sv is None and nv is None:
            continue
        n = _get(s_tasks, f"{source}.n") if source != "hygiene" else _get(s_tasks, "hygiene.answered")
        rows.append([source, title, n, fmt(sv, kind), *(fmt(_get(t, f"{source}.{key}"), kind) for t in v_tasks),
                     fmt(nv, kind)])
    for title, key in (("grounded (of answers checked)", "grounded_rate"), ("withheld as unsupported", "withheld_rate"),
                       ("abstained (answerable questions)", "abstention_rate")):
        rows.append(["all", title, "", *(fmt(_get(agg_all, f"{sys_}.answers.{key}"), "rate")
                                         for sys_ in ("slmrag", *variants)), "—"])
    return ["## Answers by task", ""] + _md_table(["source", "metric", "n", "slmrag", *variants, "naive"], rows) + [""]


def render_markdown(report: dict, plots: list[str]) -> str:
    meta = report["meta"]
    pack = meta["pack"]
    lines = [f"# slmrag eval: pack `{pack['name']}`", ""]
    if meta.get("command"):
        lines += ["```", meta["command"], "```", ""]
    lines += [
        f"- questions: {meta['questions_run']} of {meta['questions_total']} from `{meta['questions_file']}`"
        + (f" (--limit {meta['limit']}, round-robin over sources)" if meta.get("limit") else ""),
        f"- corpus: `{meta['corpus']}` (ingested into a scratch index)" if meta.get("corpus")
        else f"- index: `{meta['index']}` (the pack's own)",
        f"- started {meta['started']}, wall time {meta['wall_s']} s; {meta['machine']['cpus']} CPUs; "
        f"answers {'generated' if meta['answers'] else 'skipped (--no-answers)'}"
        + (f", max {meta['max_tokens']} tokens" if meta["answers"] else ""),
        f"- slmrag: {pack['generator']['model']} ({pack['generator']['backend']}"
        f"{', adapter ' + pack['generator']['adapter'] if pack['generator'].get('adapter') else ', no adapter'}), "
        f"embedder {pack['embedder']}, "
        f"chunking {pack['chunking'].get('strategy')} {pack['chunking'].get('chunk_tokens')} tokens, retrieval "
        f"{pack['retrieval'].get('mode')} k={pack['retrieval'].get('k')}, filter {pack['filter'].get('kind')} "
        f"threshold {pack['filter'].get('threshold')}, context budget {pack['filter'].get('max_context_tokens')} tokens",
        (f"- naive: LangChain tutorial pattern — RecursiveCharacterTextSplitter({meta['naive']['chunk_size']}, "
         f"{meta['naive']['chunk_overlap']}), same embedder, faiss.IndexFlatIP, top-{meta['naive']['k']} stuffed "
         f"into the same SLM with the rlm/rag-prompt; no BM25, no filter") if meta.get("naive")
        else "- naive: not run (--no-naive)",
        f"- retrieval metrics at depth k={meta['k']}; questions flagged `doc_scoped` are retrieved within their "
        "own document by both systems",
    ]
    if meta.get("missing_docs"):
        lines.append(f"- **warning**: {len(meta['missing_docs'])} gold document(s) are not in the index: "
                     + ", ".join(f"`{d}`" for d in meta["missing_docs"][:10]))
    lines += ["", f"## All questions (n={report['aggregates']['all']['n']})", ""]
    variants = variant_systems(meta)
    if variants:
        lines += ["Variants (slmrag with one change, same questions and index, in the same run):", ""]
        lines += [f"- `{v}`: {meta['variants'][v].get('change', '')}" for v in variants] + [""]
    rows = [cells + [r["better"]] for cells, r in zip(summary_rows(report), report["comparison"])]
    lines += _md_table(["metric", "slmrag", *variants, "naive", "slmrag / naive", "better"], rows)
    mem = meta.get("memory", {})
    after_variants = (f", {mem.get('after_variants_mb')} MB after the variants (one at a time)"
                      if variants and mem.get("after_variants_mb") is not None else "")
    lines += ["", f"Peak RSS (one process runs every system): {mem.get('after_slmrag_mb')} MB after the slmrag "
              f"phase (ingest + questions){after_variants}, {mem.get('peak_mb')} MB at the end (naive phase "
              "included, if run).", ""]

    sub = [(name, agg) for name, agg in report["aggregates"].items() if name != "all"]
    if sub:
        lines += ["## By group", ""]
        header = ["group", "n", "R@5 slmrag", "R@5 naive", "MRR slmrag", "MRR naive", "R@5 after filter",
                  "gold in context s / n", "accuracy s / n", "abstain s / n"]
        body = []
        for name, agg in sub:
            s, n = agg["slmrag"], agg["naive"]
            body.append([name, agg["n"], fmt(_get(s, "retrieval.recall@5"), "rate"), fmt(_get(n, "retrieval.recall@5"), "rate"),
                         fmt(_get(s, "retrieval.mrr"), "rate"), fmt(_get(n, "retrieval.mrr"), "rate"),
                         fmt(_get(s, "after_filter.recall@5"), "rate"),
                         f"{fmt(_get(s, 'gold_in_context'), 'rate')} / {fmt(_get(n, 'gold_in_context'), 'rate')}",
                         f"{fmt(_get(s, 'answers.accuracy'), 'rate')} / {fmt(_get(n, 'answers.accuracy'), 'rate')}",
                         f"{fmt(_get(s, 'answers.abstention_rate'), 'rate')} / {fmt(_get(n, 'answers.abstention_rate'), 'rate')}"])
        lines += _md_table(header, body) + [""]

    lines += task_table(report["aggregates"]["all"], variants)
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]

    lines += ["## Per question", "",
              "Rank of the first passage holding the gold evidence (— = not in the top k); `ctx` = the gold "
              "reached the generator; `ok` = answer judged correct (— = not scored); `abst` = abstained.", ""]
    header = ["id", "slmrag rank", "after filter", "naive rank", "ctx s/n", "ok s/n", "abst s/n"]
    body = []

    def mark(v: Any) -> str:
        return "—" if v is None else ("y" if v else "n")

    for r in report["records"]:
        s, n = r.get("slmrag", {}), r.get("naive", {})
        body.append([
            r["id"] + (" (scoped)" if r.get("doc_scoped") else ""),
            "error" if "error" in s else fmt(_get(s, "before_filter.first_hit"), "num"),
            "error" if "error" in s else fmt(_get(s, "after_filter.first_hit"), "num"),
            "error" if "error" in n else fmt(_get(n, "before_filter.first_hit"), "num"),
            f"{mark(s.get('gold_in_context'))}/{mark(n.get('gold_in_context'))}",
            f"{mark(_get(s, 'score.correct'))}/{mark(_get(n, 'score.correct'))}",
            f"{mark(s.get('abstained'))}/{mark(n.get('abstained'))}",
        ])
    lines += _md_table(header, body)
    errors = [(r["id"], sys_, r[sys_]["error"]) for r in report["records"] for sys_ in ("slmrag", *variants, "naive")
              if sys_ in r and "error" in r[sys_]]
    if errors:
        lines += ["", "## Errors", ""] + [f"- `{i}` ({sys_}): {e}" for i, sys_, e in errors]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- plots
def write_plots(report: dict, out: Path) -> list[str]:
    """recall_at_k.png, filter_scores.png (if the filter scored anything), latency.png; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    agg = report["aggregates"]["all"]
    k = int(report["meta"].get("k", 10))
    ks = list(range(1, k + 1))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve, style in (("slmrag (retrieved)", _get(agg, "slmrag.retrieval.curve"), "-o"),
                                ("slmrag (after filter)", _get(agg, "slmrag.after_filter.curve"), "--o"),
                                ("naive (LangChain pattern)", _get(agg, "naive.retrieval.curve"), "-s")):
        if curve and any(v is not None for v in curve):
            ax.plot(ks, [v if v is not None else float("nan") for v in curve], style, label=label, markersize=4)
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ks)
    ax.set_title(f"Recall@k, pack {report['meta']['pack']['name']} (n={agg['n']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "recall_at_k.png", dpi=110)
    plt.close(fig)
    written.append("recall_at_k.png")

    gold, other = [], []
    for r in report["records"]:
        for p in r.get("slmrag", {}).get("passages", []):
            if p.get("filter_score") is not None:
                (gold if p.get("hit") else other).append(p["filter_score"])
    if gold or other:
        fig, ax = plt.subplots(figsize=(6, 4))
        values = gold + other
        lo, hi = min(values), max(values)
        bins = [lo + (hi - lo) * i / 30 for i in range(31)] if hi > lo else 10
        if other:
            ax.hist(other, bins=bins, alpha=0.6, density=True, label=f"non-gold passages (n={len(other)})")
        if gold:
            ax.hist(gold, bins=bins, alpha=0.6, density=True, label=f"gold passages (n={len(gold)})")
        threshold = _get(report["meta"], "pack.filter.threshold")
        if threshold is not None and _get(report["meta"], "pack.filter.kind") != "none":
            ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold}")
        ax.set_xlabel(f"filter score ({_get(report['meta'], 'pack.filter.kind')})")
        ax.set_ylabel("density")
        ax.set_title("slmrag relevance filter: gold vs non-gold (top-k passages)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "filter_scores.png", dpi=110)
        plt.close(fig)
        written.append("filter_scores.png")

    panels = [key for key in LATENCIES if any(
        r.get(s, {}).get("timings", {}).get(key) is not None for r in report["records"] for s in SYSTEMS)]
    if panels:
        cols = 2 if len(panels) > 1 else 1
        rows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, key in zip(axes.flat, panels):
            series = {system: [r[system]["timings"][key] for r in report["records"]
                               if r.get(system, {}).get("timings", {}).get(key) is not None] for system in SYSTEMS}
            values = [x for xs in series.values() for x in xs]
            lo, hi = min(values), max(values)
            bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 5
            for system, xs in series.items():
                if xs:
                    ax.hist(xs, bins=bins, alpha=0.6, label=f"{system} (p50 {percentile(xs, 50):.2f} s)")
            ax.set_xlabel(f"{key.removesuffix('_s').replace('_', ' ')} (s)")
            ax.set_ylabel("questions")
            ax.legend(fontsize=8)
        fig.suptitle("Latency per question")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        written.append("latency.png")
    return written


# ---------------------------------------------------------------------------------------------- write
def write_report(report: dict, out: Path | str) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out)
    report["meta"]["plots"] = plots
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False, default=_json_default) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report, plots), encoding="utf-8")
    paths = {"report.json": out / "report.json", "report.md": out / "report.md"}
    paths.update({p: out / p for p in plots})
    return paths


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def summary_rows(report: dict) -> list[list[str]]:
    """Rows for a console summary: metric, slmrag, each variant (:func:`variant_systems`), naive, ratio."""
    variants = variant_systems(report["meta"])
    return [[r["metric"], fmt(r["slmrag"], r["format"]),
             *(fmt((r.get("variants") or {}).get(v), r["format"]) for v in variants),
             fmt(r["naive"], r["format"]), fmt_ratio(r["ratio"])] for r in report["comparison"]]
