"""Run one evaluation: a question set against a pack (slmrag) and the naive baseline, same run.

:func:`run_eval` is UI-free: it reports progress through an :class:`EvalProgress` and returns the report
dict that :mod:`app.evaluation.report` aggregates and writes. The command line lives in
:mod:`app.commands.eval_cmd`.

What is measured per question, for each system (details in ``docs/eval.md``):

* retrieval at depth ``k`` (10): the ranked passages, which of them hold the gold evidence
  (:func:`app.evaluation.metrics.passage_holds_evidence`), and for slmrag the relevance filter's score and
  verdict on each, so recall/MRR are known before and after the filter;
* the passages that actually reach the generator (slmrag: the pack's own ``k``, filter and token
  budget; naive: its top ``k`` stuffed) and whether the gold evidence is among them;
* the streamed answer, abstention, correctness (:func:`app.evaluation.metrics.answer_correct`) and timings.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.answers.reader import INFO as READER_INFO
from app.answers.selector import INFO as SELECTOR_INFO
from app.errors import InputError, SlmragError
from app.evaluation.metrics import answer_correct, is_refusal
from app.evaluation.tasks import hygiene, task_score
from app.evaluation.questions import holds_evidence, load_questions, scope
from app.evaluation.variants import KEEP, Variant, apply_variant, parse_variants
from app.pair_model import weights_sha256

PREVIEW_CHARS = 300


# ---------------------------------------------------------------------------------------------- options
@dataclass
class EvalOptions:
    pack: str
    questions: Path
    corpus: Path | None = None
    limit: int | None = None
    out: Path = Path("ev-out")
    answers: bool = True
    max_tokens: int | None = None
    k: int = 10  # retrieval depth for recall@k / MRR
    naive_k: int = 4  # passages the naive baseline stuffs (LangChain's retriever default)
    keep_index: bool = False  # keep the scratch index (in <out>/index) instead of a deleted temp folder
    command: str = ""
    adapter: bool = True  # False: slmrag answers with the base model (the pack's generator.adapter unset)
    naive: bool = True  # False: skip the naive baseline (a second run that only varies slmrag)
    filter: bool = True  # False: slmrag keeps every retrieved passage (filter.kind none, no gate)
    variants: tuple[str, ...] = ()  # slmrag with one change each, run on the same questions (app.evaluation.variants)


class EvalProgress:
    """Progress sink; the CLI subclasses it with a rich progress bar. All methods are optional no-ops."""

    def stage(self, name: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def detail(self, text: str) -> None: ...
    def note(self, text: str) -> None: ...
    def finish(self) -> None: ...


class _IngestSink:
    """Adapts :class:`EvalProgress` to the ingest pipeline's ProgressSink interface."""

    def __init__(self, progress: EvalProgress, name: str):
        self.progress = progress
        self.name = name
        self.n_chunks = 0

    def start(self, total_files: int) -> None:
        self.progress.stage(self.name, total_files)

    def file(self, name: str) -> None:
        self.progress.detail(f"{self.n_chunks} chunks  {name[-40:]}")

    def chunks(self, n: int) -> None:
        self.n_chunks += n

    def advance(self) -> None:
        self.progress.advance()

    def finish(self) -> None:
        self.progress.detail(f"{self.n_chunks} chunks")


# ---------------------------------------------------------------------------------------------- questions
def select_questions(questions: list[dict], limit: int | None) -> list[dict]:
    """The first ``limit`` questions taken round-robin across ``source`` values (in file order within each
    source), so a quick run of a file grouped by source still sees every source. ``None``: all of them."""
    if limit is None or limit >= len(questions):
        return list(questions)
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}.")
    groups: dict[str, list[dict]] = {}
    for q in questions:
        groups.setdefault(str(q.get("source", "")), []).append(q)
    queues = [list(g) for g in groups.values()]
    picked: list[dict] = []
    while len(picked) < limit:
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    order = {q["id"]: i for i, q in enumerate(questions)}
    return sorted(picked, key=lambda q: order[q["id"]])


# ---------------------------------------------------------------------------------------------- helpers
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def ranking(hits: list[bool], ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """First hit rank, recall@k and reciprocal rank of one ranked list of hit flags."""
    from app.evaluation.metrics import first_hit_rank, recall_at_k, reciprocal_rank

    return {"first_hit": first_hit_rank(hits), "recall": {str(k): recall_at_k(hits, k) for k in ks},
            "rr": reciprocal_rank(hits)}


def _run_questions(progress, stage: str, key: str, questions: list[dict], records: list[dict], ask) -> None:
    """Answer every question with one system, storing ``rec[key]``; one failing question is recorded as
    an error and the run goes on."""
    progress.stage(stage, len(questions))
    for q, rec in zip(questions, records):
        progress.detail(q["id"])
        try:
            rec[key] = ask(q)
        except (SlmragError, ValueError, RuntimeError) as exc:
            rec[key] = {"error": _error(exc)}
        progress.advance()


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# ---------------------------------------------------------------------------------------------- slmrag
def slmrag_record(assistant, q: dict, opts: EvalOptions, max_tokens: int) -> dict:
    from app.assistant import AskOptions
    from app.prompting import clean_question

    question = clean_question(q["question"])
    doc = scope(q)
    # 1. Retrieval at depth k, with the filter's score and verdict on every passage.
    probe = assistant.retrieve(question, AskOptions(k=opts.k, doc=doc))
    passages = probe.passages
    hits = [holds_evidence(p, q) for p in passages]
    kept_hits = [h for p, h in zip(passages, hits) if p.kept]
    rec: dict[str, Any] = {
        "passages": [{"rank": p.rank, "name": p.name, "page": p.page, "score": round(float(p.score), 5),
                      "filter_score": None if p.filter_score is None else round(float(p.filter_score), 5),
                      "kept": bool(p.kept), "hit": h, "text": p.text[:PREVIEW_CHARS], **p.filter_details()}
                     for p, h in zip(passages, hits)],
        "hits": hits,
        "kept_hits": kept_hits,
        "before_filter": ranking(hits),
        "after_filter": ranking(kept_hits),
        "filter": {
            "gold_kept": sum(1 for p, h in zip(passages, hits) if h and p.kept),
            "gold_dropped": sum(1 for p, h in zip(passages, hits) if h and not p.kept),
            "nongold_kept": sum(1 for p, h in zip(passages, hits) if not h and p.kept),
            "nongold_dropped": sum(1 for p, h in zip(passages, hits) if not h and not p.kept),
        },
        "probe_timings": probe.timings,
    }
    # 2. What the pack itself does with the question (its own k, filter and token budget).
    if opts.answers:
        stream = assistant.ask(question, AskOptions(doc=doc, max_tokens=max_tokens))
        for _ in stream:
            pass
        answer = stream.answer
        context, timings = answer.context, dict(answer.timings)
        refused = is_refusal(answer.answer)
        abstained = bool(answer.abstained or refused)
        info = {"shape": answer.shape, "label": answer.label, "grounded": answer.grounded,
                "withheld": answer.withheld, "decided_by": answer.decided_by, "support": answer.support,
                "details": answer.details}
        rec.update({
            "answer": answer.answer,
            "answer_info": info,
            "abstained_filter": answer.decided_by == "filter",
            "refused": bool(refused),
            "abstained": abstained,
            # An abstention states nothing: its text names the nearest sources ("p.40"), not an answer.
            "score": answer_correct("" if abstained else answer.answer, q),
            "task": task_score(info, answer.answer, q, abstained),
            "hygiene": hygiene(info, answer.answer, len(answer.context), abstained),
        })
    else:
        found = assistant.retrieve(question, AskOptions(doc=doc))
        timings, context = found.timings, found.kept
    context_hits = [holds_evidence(p, q) for p in context]
    rec["context"] = [{"name": p.name, "page": p.page, "hit": h} for p, h in zip(context, context_hits)]
    rec["gold_in_context"] = any(context_hits)
    rec["timings"] = timings
    return rec


# ---------------------------------------------------------------------------------------------- naive
def naive_record(naive, q: dict, opts: EvalOptions, max_tokens: int) -> dict:
    from app.prompting import clean_question

    question = clean_question(q["question"])
    t0 = time.perf_counter()
    passages = naive.search(question, opts.k, doc=scope(q))
    retrieve_s = time.perf_counter() - t0
    hits = [holds_evidence(p, q) for p in passages]
    rec: dict[str, Any] = {
        "passages": [{"rank": p.rank, "name": p.name, "page": p.page, "score": round(p.score, 5), "hit": h,
                      "text": p.text[:PREVIEW_CHARS]} for p, h in zip(passages, hits)],
        "hits": hits,
        "before_filter": ranking(hits),
    }
    timings: dict[str, Any] = {"retrieve_s": round(retrieve_s, 4)}
    if opts.answers:
        context = naive.stuff(question, passages, max_tokens)
        parts: list[str] = []
        n_tokens = 0
        first = None
        for piece in naive.stream(question, context, max_tokens):
            if first is None:
                first = time.perf_counter()
            n_tokens += 1
            parts.append(piece)
        end = time.perf_counter()
        text = "".join(parts).strip()
        gen_s = end - (first or end)
        timings.update({"first_token_s": round((first or end) - t0, 4), "total_s": round(end - t0, 4),
                        "tokens": n_tokens,
                        "tokens_per_s": round((n_tokens - 1) / gen_s, 2) if n_tokens > 1 and gen_s > 0 else None})
        refused = is_refusal(text)
        rec.update({"answer": text, "refused": refused, "abstained": refused, "score": answer_correct("" if refused else text, q),
                    "task": task_score({}, text, q, refused),
                    "hygiene": hygiene({}, text, len(context), refused)})
    else:
        context = passages[: naive.k]
    chosen = {id(p) for p in context}
    rec["context"] = [{"name": p.name, "page": p.page, "hit": h} for p, h in zip(passages, hits) if id(p) in chosen]
    rec["gold_in_context"] = any(c["hit"] for c in rec["context"])
    rec["timings"] = timings
    return rec


# ---------------------------------------------------------------------------------------------- run
def _corpus_files(corpus: Path | None, pack) -> list[Path]:
    from app.store import IndexStore
    from ingest.ingestor import collect_files

    if corpus is not None:
        files, _ = collect_files([corpus])
        return files
    return sorted(Path(d.path) for d in IndexStore(pack.index_dir).documents().values() if Path(d.path).is_file())


def _adapter_hash(pack) -> str | None:
    """The sha256 of the adapter's llama.cpp file, so figures recorded from this report name the adapter
    they measured (``slmrag adapt record`` checks it)."""
    from app.generators import adapter_file
    from app.store import file_sha256

    try:
        path = adapter_file(pack.config.generator, pack.path, "gguf")
    except SlmragError:
        return None
    return file_sha256(path) if path is not None and path.is_file() else None


def _pack_info(pack) -> dict:
    c = pack.config
    return {
        "name": pack.name, "path": str(pack.path), "version": c.version,
        "generator": {"backend": c.generator.backend, "model": c.generator.model, "n_ctx": c.generator.n_ctx,
                      "max_tokens": c.generator.max_tokens, "adapter": c.generator.adapter,
                      "adapter_sha256": _adapter_hash(pack), "adapter_merge": c.generator.adapter_merge},
        "embedder": c.embedder.model,
        "chunking": c.chunking.model_dump(),
        "retrieval": c.retrieval.model_dump(),
        "filter": c.filter.model_dump(),
        "redact_pii": c.ingest.redact_pii,
        "answers": {setting: {"folder": folder, "sha256": weights_sha256(pack.path / folder)}
                    for setting in ANSWER_MODELS if (folder := getattr(c.answers, setting))},
    }


#: The small trained models a pack's answers may use (pack.yaml ``answers.<setting>``: a pack-relative
#: folder), each with the name of its metadata file, where ``slmrag adapt record`` keeps its dev figures.
ANSWER_MODELS = {"label_reader": READER_INFO, "extract_selector": SELECTOR_INFO, "label_selector": SELECTOR_INFO}


def _prepare_filter_model(pack, user_index: Path, scratch: Path | None) -> str | None:
    """A trained cross-encoder filter lives in the pack's index folder; a scratch index gets a copy of it."""
    if scratch is None or pack.config.filter.kind != "cross_encoder":
        return None
    from app.filters.cross_encoder import cross_encoder_dir

    src, dst = cross_encoder_dir(user_index), cross_encoder_dir(scratch)
    if not src.is_dir():
        return None  # the filter's own error (train it first) is raised when it is built
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return f"cross-encoder model copied from {src}"


def _measured_pack(opts: EvalOptions):
    """The pack as this run measures it: its settings, less the adapter or filter when --no-adapter / --no-filter."""
    from app.packs import load_pack

    pack = load_pack(opts.pack)
    if not opts.adapter and pack.config.generator.adapter:
        apply_variant(Variant("base"), pack, None)
    if not opts.filter and pack.config.filter.kind != "none":
        apply_variant(Variant("no-filter"), pack, None)
    return pack


def _cosine_threshold(assistant, questions: list[dict]) -> float:
    """The cosine threshold that keeps 95 % of the gold passages among the pack's top-k candidates of
    ``questions`` (the rule of ``slmrag filter calibrate``), for a cosine variant given no threshold."""
    from app.evaluation.calibration import calibrate

    return calibrate(assistant, questions, kind="cosine", keep=KEEP).threshold


def run_eval(opts: EvalOptions, progress: EvalProgress | None = None) -> dict:
    """Run the whole evaluation and return the report dict (records + aggregates). Writes nothing."""
    from app.evaluation import report as report_mod
    from app.evaluation.baseline import NaiveRAG
    from app.assistant import Assistant
    from app.store import IndexStore

    progress = progress or EvalProgress()
    started = datetime.now(timezone.utc)
    t_run = time.perf_counter()
    all_questions = load_questions(opts.questions)
    questions = select_questions(all_questions, opts.limit)
    if opts.k < 1:
        raise InputError(f"--k must be at least 1, got {opts.k}.")

    variants = parse_variants(opts.variants)
    # --no-adapter / --no-filter change the measured pack itself; --variant measures such a change beside it.
    pack = _measured_pack(opts)
    for v in variants:  # a variant that cannot apply to this pack is refused now, not after the pack's own run
        apply_variant(v, _measured_pack(opts), lambda _: 0.0)
    user_index = pack.index_dir
    corpus = None
    scratch: Path | None = None
    if opts.corpus is not None:
        corpus = Path(opts.corpus).expanduser().resolve()
        if not corpus.exists():
            raise InputError(f"{corpus}: no such corpus folder; pass the folder that holds the documents.")
        if opts.keep_index:
            scratch = Path(opts.out).expanduser().resolve() / "index"
            if scratch.exists():
                shutil.rmtree(scratch)
            scratch.mkdir(parents=True)
        else:
            scratch = Path(tempfile.mkdtemp(prefix="slmrag-eval-index-"))
        if scratch.resolve() == Path(user_index).resolve():
            raise InputError(f"{scratch}: the scratch index would be the pack's own index; choose another --out.")
        pack = pack.with_index_dir(scratch)
    elif not IndexStore(pack.index_dir).exists() or IndexStore(pack.index_dir).generation() == 0:
        raise InputError(f"pack '{pack.name}' has no index at {pack.index_dir}; pass --corpus DIR to evaluate on a "
                         f"scratch index, or run `slmrag ingest --pack {pack.name} DIR` first.")

    max_tokens = opts.max_tokens or pack.config.generator.max_tokens
    memory: dict[str, float] = {"start_mb": peak_rss_mb()}
    try:
        assistant = Assistant(pack)
        ingest_info = None
        ingest_embedder = None  # the embedder the ingest loaded in full, for the naive baseline's build
        if corpus is not None:
            from ingest.ingestor import Ingestor

            # Load the embedder first: its one-time load is not ingest speed (the naive build reuses it too).
            assistant.embedder.load()
            summary = Ingestor(pack, embedder=assistant.embedder).ingest(
                [corpus], progress=_IngestSink(progress, "ingest (slmrag)"), wait=False)
            ingest_info = {
                "documents": len(summary.added) + len(summary.updated), "failed": summary.failed,
                "pages": summary.pages, "chunks": summary.chunks, "seconds": summary.seconds,
                "chunks_per_s": round(summary.chunks / summary.seconds, 2) if summary.seconds else None,
                "pages_per_s": round(summary.pages / summary.seconds, 2) if summary.seconds else None,
            }
            progress.note(f"slmrag ingest: {ingest_info['documents']} documents, {summary.pages} pages, "
                          f"{summary.chunks} chunks in {summary.seconds:.1f}s "
                          f"({ingest_info['chunks_per_s']} chunks/s), {len(summary.failed)} failed")
            # Ask as a fresh process does (queries through ONNX when the pack allows it), not with the torch model
            # the ingest loaded: the variants below ask that way, and a side-by-side must differ only by the variant.
            ingest_embedder, assistant = assistant.embedder, Assistant(pack)
        filter_note = _prepare_filter_model(pack, user_index, scratch)
        assistant.load(generator=opts.answers)
        assistant.relevance_filter()  # fail now, not once per question, if the filter cannot be built
        memory["after_ingest_mb"] = peak_rss_mb()
        indexed_names = {d.name for d in assistant.snapshot.documents.values()}

        records: list[dict] = []
        for q in questions:
            records.append({
                "id": q["id"], "source": q.get("source", ""), "question": q["question"], "gold_answer": q["answer"],
                "doc": q["doc"], "page": q.get("page"), "doc_scoped": bool(q.get("doc_scoped")),
                "doc_indexed": Path(q["doc"]).name in indexed_names,
            })

        _run_questions(progress, "slmrag questions", "slmrag", questions, records,
                       lambda q: slmrag_record(assistant, q, opts, max_tokens))
        memory["after_slmrag_mb"] = peak_rss_mb()

        # ------------------------------------------------------------ variants, same questions and index
        variant_info: dict[str, dict] = {}
        for v in variants:
            vpack = _measured_pack(opts)
            if scratch is not None:
                vpack = vpack.with_index_dir(scratch)
            progress.note(f"{v.system}: preparing")
            # Settings are read when used, so the assistant can be made before the variant changes them; a calibrated
            # threshold comes from the assistant that asks with it (the same question vectors: on a CPU with AMX a
            # torch-bf16 and an ONNX query vector differ by ~1e-4, enough to drop the gold passage at the threshold).
            vassistant = Assistant(vpack)
            variant_info[v.system] = {"name": v.name, "value": v.value, **apply_variant(
                v, vpack, lambda _, a=vassistant: _cosine_threshold(a, questions))}
            _prepare_filter_model(vpack, user_index, scratch)
            vassistant.load(generator=opts.answers)
            vassistant.relevance_filter()
            _run_questions(progress, f"{v.system} questions", v.system, questions, records,
                           lambda q, a=vassistant: slmrag_record(a, q, opts, max_tokens))
            del vassistant  # one variant's models in memory at a time
        memory["after_variants_mb"] = peak_rss_mb()

        # ------------------------------------------------------------ naive baseline, same questions
        naive, naive_ingest = None, None
        if opts.naive:
            files = _corpus_files(corpus, pack)
            embedder = (ingest_embedder or assistant.embedder).load()  # its one-time load is not the baseline's ingest
            naive = NaiveRAG(embedder, assistant.generator if opts.answers else None, k=opts.naive_k,
                             n_ctx=pack.config.generator.n_ctx, max_pages=pack.config.ingest.max_pages,
                             timeout_s=pack.config.ingest.parse_timeout_s)
            progress.stage("naive: load + split", len(files))
            build = naive.build(files, on_file=lambda name: progress.advance(),
                                on_embed=lambda n: progress.stage("naive: embed", n), on_chunks=progress.advance)
            naive_ingest = build.to_json()
            progress.note(f"naive ingest: {build.documents} documents, {build.pages} pages, {build.chunks} chunks in "
                          f"{build.seconds:.1f}s ({naive_ingest['chunks_per_s']} chunks/s)")
            _run_questions(progress, "naive questions", "naive", questions, records,
                           lambda q: naive_record(naive, q, opts, max_tokens))
        memory["peak_mb"] = peak_rss_mb()
    finally:
        progress.finish()
        if scratch is not None and not opts.keep_index:
            shutil.rmtree(scratch, ignore_errors=True)

    missing_docs = sorted({r["doc"] for r in records if not r["doc_indexed"]})
    meta = {
        "command": opts.command,
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - t_run, 1),
        "questions_file": str(Path(opts.questions).expanduser().resolve()),
        "questions_total": len(all_questions),
        "questions_run": len(questions),
        "limit": opts.limit,
        "corpus": str(corpus) if corpus else None,
        "index": "scratch" if corpus else str(user_index),
        "answers": opts.answers,
        "max_tokens": max_tokens,
        "k": opts.k,
        "pack": _pack_info(pack),
        "filter_model": filter_note,
        "variants": variant_info,
        "naive": naive.settings() if naive is not None else None,
        "ingest": {"slmrag": ingest_info, "naive": naive_ingest},
        "memory": memory,
        "missing_docs": missing_docs,
        "machine": {"cpus": os.cpu_count(), "threads": int(os.environ.get("SLMRAG_THREADS") or os.cpu_count() or 1),
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    return report_mod.build_report(meta, records)
