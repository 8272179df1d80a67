"""``slmrag filter train / calibrate / topic``: the pack's own relevance model, its threshold and its topic gate.

The work is in :mod:`app.training.cross_encoder` (train), :mod:`app.evaluation.calibration` and
:mod:`app.pack_edit` (calibrate), :mod:`app.training.topic` (topic); these commands parse options, show progress and print results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from app.errors import SlmragError


def _progress_enabled(err, as_json: bool) -> bool:
    return (not as_json and err.is_terminal) or os.environ.get("SLMRAG_PROGRESS") == "1"


def register(app, packs_app, filter_app) -> None:
    from app.commands.common import IndexDirOpt, JsonOpt, PackOpt, err, invoked_command, out
    from app.commands.common import fail as _fail
    from app.packs import load_pack as _pack
    from app.packs import writable_pack

    @filter_app.command("train")
    def filter_train(
        pack: str = PackOpt,
        index_dir: Optional[Path] = IndexDirOpt,
        max_queries: int = typer.Option(400, "--max-queries", min=4, max=20000,
                                        help="Chunks turned into pseudo-questions (each gives 1 positive and 3 "
                                        "negatives); bounds the training time."),
        epochs: int = typer.Option(1, "--epochs", min=1, max=10, help="Passes over the pairs."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many batches."),
        seed: int = typer.Option(0, "--seed", help="Random seed (pair sampling, shuffling, initialisation)."),
        train: Optional[Path] = typer.Option(None, "--train", help="Labelled rows to learn from (a folder with "
                                             "questions.jsonl and corpus/): trains the pack's shipped relevance "
                                             "model instead of the label-free one."),
        out_of_pack: list[Path] = typer.Option([], "--out-of-pack", help="With --train: question files of other "
                                               "domains (JSON lines; only each line's 'question' is read), used as "
                                               "negatives. Repeatable."),
        max_rows: Optional[int] = typer.Option(None, "--max-rows", min=1, help="With --train: use at most this many rows."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Train the pack's cross-encoder relevance filter: on labelled rows (--train), or on its own index.

        With --train: pairs of each row's question with its gold passage (positive) and the other
        candidates the pack's own retrieval returns over that corpus (negatives, from the same document
        and others), plus other domains' questions (--out-of-pack); a LoRA adapter and scoring head on the
        packaged MiniLM, saved in the pack's filter/ folder (safetensors, a few MB) and set as
        filter.model with filter.kind: cross_encoder in pack.yaml. Then run `slmrag filter calibrate`.

        Pseudo-questions are taken out of the indexed chunks (a sentence, a heading or key words); the
        chunk is the positive, BM25/dense neighbours and random chunks are negatives. The model is saved
        as safetensors in <index_dir>/filter/cross_encoder/. Then set filter.kind: cross_encoder in
        pack.yaml and run `slmrag filter calibrate`.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from app.filters.cross_encoder import cross_encoder_dir
        from app.store import IndexStore
        from app.training.cross_encoder import build_training_pairs, train_cross_encoder
        from ingest.starter import ensure_index

        if train is not None:
            _train_labelled(pack, train, out_of_pack, index_dir, epochs, max_rows, seed, as_json)
            return
        try:
            p = _pack(pack, index_dir)
            if ensure_index(p):
                err.print(f"ingested the starter corpus of '{p.name}' into {p.index_dir}", highlight=False)
            store = IndexStore(p.index_dir)
            if not store.exists() or store.generation() == 0:
                raise SlmragError(f"Pack '{p.name}' has no index at {p.index_dir}. Add documents first: "
                                  f"slmrag ingest FOLDER --pack {p.name}")
            snapshot = store.snapshot()
            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=err, disable=not _progress_enabled(err, as_json), transient=False)
            with progress:
                task = progress.add_task("building pairs", total=None, loss="-")
                pairs = build_training_pairs(snapshot, max_queries=max_queries, seed=seed)
                progress.update(task, description="training", total=1, completed=0)

                def tick(step: int, total: int, loss: float) -> None:
                    progress.update(task, total=total, completed=step, loss=f"{loss:.3f}")

                report = train_cross_encoder(snapshot, cross_encoder_dir(p.index_dir), epochs=epochs,
                                             max_steps=max_steps, seed=seed, pairs=pairs, progress=tick)
        except SlmragError as exc:
            _fail(exc)
        if as_json:
            print(json.dumps(report.to_json() | {"pack": p.name}, indent=2))
            return
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.kinds.items()))
        out.print(f"trained the cross-encoder of '{p.name}' on {report.pairs} pairs ({report.positives} positives; "
                  f"{kinds}) in {report.steps} steps, {report.seconds:.0f}s; final loss {report.final_loss:.3f}",
                  highlight=False)
        out.print(f"saved to {report.model_dir} (safetensors)", highlight=False)
        out.print(f"next: set filter.kind: cross_encoder in {p.path / 'pack.yaml'} and run "
                  f"slmrag filter calibrate --pack {p.name} --questions DEV.jsonl --kind cross_encoder --write",
                  highlight=False, markup=False)

    def _train_labelled(pack: str, train: Path, out_of_pack: list[Path], index_dir: Optional[Path], epochs: int,
                        max_rows: Optional[int], seed: int, as_json: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from app.commands.common import training_assistant
        from app.evaluation.questions import load_questions
        from app.pack_edit import set_block_values
        from app.training.relevance import build_pairs, train_relevance

        try:
            p = writable_pack(_pack(pack))
            assistant, rows, digest = training_assistant(p, train, index_dir, not as_json)
            oop = [q for f in out_of_pack for q in load_questions(f, labelled=False)]
            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=err, disable=not _progress_enabled(err, as_json), transient=False)
            with progress:
                task = progress.add_task("building pairs", total=None, loss="-")
                pairs = build_pairs(assistant, rows, out_of_pack=oop, seed=seed, max_rows=max_rows,
                                    progress=lambda n, total: progress.update(task, completed=n, total=total))
                progress.update(task, description="training", total=1, completed=0)
                info = {"pack": p.name, "train_data": str(train), "train_data_sha256": digest,
                        "out_of_pack": [str(f) for f in out_of_pack],
                        "command": invoked_command()}
                meta = train_relevance(pairs, p.path / "filter", epochs=epochs, seed=seed,
                                       progress=lambda s, t, loss: progress.update(task, total=t, completed=s,
                                                                                   loss=f"{loss:.3f}"), info=info)
            set_block_values(p.path / "pack.yaml", "filter", {"kind": "cross_encoder", "model": "filter"},
                             lambda cfg: cfg.filter.kind == "cross_encoder" and cfg.filter.model == "filter")
        except SlmragError as exc:
            _fail(exc)
        if as_json:
            print(json.dumps(meta, indent=2))
            return
        out.print(f"trained the relevance model of '{p.name}' on {meta['pairs']} pairs {meta['pair_kinds']} in "
                  f"{meta['steps']} steps, {meta['seconds']:.0f}s; final loss {meta['final_loss']:.3f}", highlight=False)
        out.print(f"saved to {p.path / 'filter'}; pack.yaml now uses it (filter.kind: cross_encoder, filter.model: "
                  f"filter). Next: slmrag filter calibrate --pack {p.name} --questions DEV.jsonl --write",
                  highlight=False, markup=False)

    @filter_app.command("calibrate")
    def filter_calibrate(
        pack: str = PackOpt,
        questions: Path = typer.Option(..., "--questions", "-q", help="Dev questions, JSON lines with 'id', "
                                       "'question', 'answer', 'evidence' and 'doc' (the format of "
                                       "shared/data/*/questions.jsonl; docs/eval.md)."),
        index_dir: Optional[Path] = IndexDirOpt,
        corpus: Optional[Path] = typer.Option(None, "--corpus", help="Ingest this folder into the index first "
                                              "(unchanged files are skipped), e.g. the dev set's corpus/."),
        kind: Optional[str] = typer.Option(None, "--kind", help="Filter to calibrate (default: the pack's filter.kind): "
                                           "cosine, cross_encoder, slm_judge."),
        k: Optional[int] = typer.Option(None, "--k", min=1, max=50, help="Candidates per question (default: the pack's retrieval.k)."),
        keep: float = typer.Option(0.95, "--keep", min=0.5, max=1.0, help="Share of gold passages the threshold must keep."),
        out_of_pack: Optional[Path] = typer.Option(None, "--out-of-pack", help="Questions this pack cannot answer "
                                                   "(e.g. another domain's; JSON lines, only each line's 'question' is "
                                                   "read); reports how often they abstain."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N questions of each file."),
        gate: Optional[float] = typer.Option(None, "--gate", min=0.0, max=0.5, help="Also choose filter.gate, the "
                                             "question-level cosine floor, so that at most this share of answerable "
                                             "questions is gated (e.g. 0.02); the threshold is then chosen given the gate."),
        cosine_keep: Optional[float] = typer.Option(None, "--cosine-keep", min=-1.0, max=1.0, help="With a trained "
                                                    "filter: passages whose cosine reaches this are kept anyway "
                                                    "(filter.cosine_keep, for document kinds the model was not trained "
                                                    "on); the threshold is chosen given it."),
        cosine_floor: Optional[float] = typer.Option(None, "--cosine-floor", min=-1.0, max=1.0, help="With a "
                                                     "trained filter: passages whose cosine is under this are dropped "
                                                     "anyway (filter.cosine_floor: off the question's topic); the "
                                                     "threshold is chosen given it."),
        relative_to_best: Optional[float] = typer.Option(None, "--relative-to-best", min=0.0, max=1.0, help="With a "
                                                         "trained filter: the share of each question's best log-odds "
                                                         "taken out of every score (filter.relative_to_best; default: "
                                                         "the pack's); the threshold is chosen given it."),
        rank_prior: Optional[float] = typer.Option(None, "--rank-prior", min=0.0, max=5.0, help="With a trained "
                                                   "filter: log-odds taken off each score per place down retrieval's "
                                                   "list (filter.rank_prior; default: the pack's); the threshold is "
                                                   "chosen given it."),
        write: bool = typer.Option(False, "--write", help="Store the threshold (and --kind, --gate, --cosine-keep, "
                                   "--cosine-floor, --relative-to-best, --rank-prior) in the pack's pack.yaml."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Choose the filter threshold that keeps >= 95% of gold passages and drops the most others."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Table

        from app.assistant import Assistant
        from app.evaluation.calibration import calibrate
        from app.evaluation.questions import load_questions
        from app.pack_edit import round_down, write_filter_settings

        try:
            p = _pack(pack, index_dir)
            if write:
                writable_pack(p)
            qs = load_questions(questions, limit)
            oop = load_questions(out_of_pack, limit, labelled=False) if out_of_pack else []
            if corpus is not None:
                from app.commands.common import IngestProgress as RichProgress
                from ingest.ingestor import Ingestor

                if not Path(corpus).is_dir():
                    raise SlmragError(f"--corpus {corpus} is not a folder.")
                summary = Ingestor(p).ingest([corpus], progress=RichProgress(not as_json),
                                             on_wait=lambda m: err.print(m))
                if summary.failed:
                    for f in summary.failed:
                        err.print(f"[red]failed:[/] {f['error']}", highlight=False)
            assistant = Assistant(p)
            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err, disable=not _progress_enabled(err, as_json))
            with progress:
                task = progress.add_task("scoring", total=len(qs) + len(oop))
                cal = calibrate(assistant, qs, kind=kind, k=k, keep=keep, out_of_pack=oop, gate_max_false=gate,
                                cosine_keep=cosine_keep, cosine_floor=cosine_floor, relative=relative_to_best,
                                rank_prior=rank_prior, progress=lambda: progress.advance(task))
            written = None
            if write:
                write_filter_settings(p.path / "pack.yaml", threshold=None if cal.kind == "none" else cal.threshold,
                                      kind=kind if kind and kind != p.config.filter.kind else None, gate=cal.gate,
                                      cosine_keep=cosine_keep, cosine_floor=cosine_floor,
                                      relative_to_best=relative_to_best, rank_prior=rank_prior)
                written = str(p.path / "pack.yaml")
                info = p.path / (p.config.filter.model or "-") / "filter.json"
                if cal.kind == "cross_encoder" and p.config.filter.model and info.is_file():
                    from app.pack_edit import record_dev_figures

                    figures = {key: value for key, value in cal.summary().items() if key != "kind"}
                    record_dev_figures(info, figures | {"questions_file": str(questions), "k": k or p.config.retrieval.k,
                                                        "precision": p.config.filter.precision,
                                                        "read_tokens": p.config.filter.read_tokens}, invoked_command())
        except SlmragError as exc:
            _fail(exc)
        summary = cal.summary()
        summary["threshold"] = round_down(cal.threshold)
        if cal.gate is not None:
            summary["gate"] = round_down(cal.gate)
        if as_json:
            print(json.dumps({"pack": p.name, **summary, "table": cal.table(), "written": written}, indent=2))
            return
        table = Table(title=f"{p.name}: filter '{cal.kind}' on {summary['questions']} questions "
                            f"({summary['answerable']} with a gold passage among the candidates)")
        table.add_column("threshold", justify="right")
        table.add_column("gold kept", justify="right")
        table.add_column("non-gold dropped", justify="right")
        table.add_column("false abstention", justify="right")
        if oop:
            table.add_column("out-of-pack abstention", justify="right")
        for row in cal.table():
            mark = " <" if row["threshold"] == cal.threshold else ""
            cells = [f"{round_down(row['threshold']):.4f}{mark}", f"{row['gold_kept']:.1%}", f"{row['nongold_dropped']:.1%}",
                     f"{row['false_abstention']:.1%}"]
            if oop:
                cells.append(f"{row['oop_abstention']:.1%}")
            table.add_row(*cells)
        out.print(table)
        if cal.kind == "none":
            out.print(f"filter 'none': every passage of a question the gate admits is kept ({summary['gold_passages']} "
                      f"gold / {summary['nongold_passages']} other passages)", highlight=False)
        else:
            out.print(f"AUC {summary['auc']:.3f} over {summary['gold_passages']} gold / {summary['nongold_passages']} "
                      f"other passages; chosen threshold {summary['threshold']:.4f} (keeps >= {keep:.0%} of gold)",
                      highlight=False)
        if cal.gate is not None:
            out.print(f"gate {summary['gate']:.4f}: a question whose best candidate's cosine is below it keeps nothing "
                      f"(at most {gate:.0%} of answerable questions); rates above include it", highlight=False)
        if cosine_keep is not None:
            out.print(f"cosine keep {cosine_keep:.4f}: a passage whose cosine reaches it is kept whatever the trained "
                      "model scores it; rates above include it", highlight=False)
        if cosine_floor is not None:
            out.print(f"cosine floor {cosine_floor:.4f}: a passage whose cosine is under it is dropped whatever the "
                      "trained model scores it; rates above include it", highlight=False)
        if cal.relative:
            out.print(f"relative to best {cal.relative:g}: scores read against each question's best-scored candidate "
                      "(filter.relative_to_best); the threshold and AUC above are on those", highlight=False)
        if cal.rank_prior:
            out.print(f"rank prior {cal.rank_prior:g}: {cal.rank_prior:g} log-odds taken off each score per place down "
                      "retrieval's list (filter.rank_prior); the threshold and AUC above are on those", highlight=False)
        if cal.topic_threshold is not None:
            out.print(f"topic gate {cal.topic_threshold:.4f} ({p.config.filter.topic_model}/): a question it turns away keeps "
                      "nothing; rates above include it", highlight=False)
        if written and cal.kind == "none":
            out.print(f"wrote filter.kind: none, filter.gate: {summary['gate']:.4f} to {written}", highlight=False)
        elif written:
            out.print(f"wrote filter.threshold: {summary['threshold']:.4f} to {written}", highlight=False)
        else:
            out.print(f"add --write to store it in {p.path / 'pack.yaml'}", highlight=False)

    @filter_app.command("topic")
    def filter_topic(
        pack: str = PackOpt,
        train: Path = typer.Option(..., "--train", help="The pack's own questions: a training folder with "
                                   "questions.jsonl (as for `filter train`) or a JSON-lines file."),
        out_of_pack: list[Path] = typer.Option(..., "--out-of-pack", help="Other domains' questions (JSON lines; "
                                               "their training rows, never the dev questions you measure on)."),
        max_false: float = typer.Option(0.02, "--max-false", min=0.0, max=0.5, help="Share of the pack's own questions "
                                        "(cross-validated) the gate may turn away; sets filter.topic_threshold."),
        seed: int = typer.Option(0, "--seed", help="Assigns questions to cross-validation folds."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Train the pack's topic gate: does a question belong to this pack at all?

        A logistic regression on the pack's question embeddings, this pack's questions against other
        domains' (a few KB of safetensors in the pack's topic/ folder); its threshold turns away at most
        --max-false of the pack's own questions, scored by cross-validation. Sets filter.topic_model and
        filter.topic_threshold in pack.yaml. Then `slmrag filter calibrate --out-of-pack` measures filter +
        gate on dev questions.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from app.embedder import Embedder
        from app.evaluation.questions import load_questions
        from app.pack_edit import set_block_values
        from app.store import file_sha256
        from app.training.adapter import data_hash
        from app.training.topic import train_topic_gate

        try:
            p = writable_pack(_pack(pack))
            source = train / "questions.jsonl" if train.is_dir() else train
            if not source.is_file():
                raise SlmragError(f"--train {train}: no questions.jsonl there. Pass a training folder (questions.jsonl "
                                  "+ corpus/) or a JSON-lines file of the pack's questions.")
            mine = [q["question"] for q in load_questions(source, labelled=False)]
            others = [q["question"] for f in out_of_pack for q in load_questions(f, labelled=False)]
            embedder = Embedder(p.config.embedder, p.path)
            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err, disable=not _progress_enabled(err, as_json))
            info = {"pack": p.name, "train_data": str(train),
                    "train_data_sha256": data_hash(train) if train.is_dir() and (train / "corpus").is_dir()
                    else file_sha256(source),
                    "out_of_pack": {str(f): file_sha256(f) for f in out_of_pack}, "command": invoked_command()}
            with progress:
                task = progress.add_task("embedding questions", total=len(mine) + len(others))
                meta = train_topic_gate(embedder, mine, others, p.path / "topic", max_false=max_false, seed=seed,
                                        info=info, progress=lambda n: progress.advance(task, n))
            threshold = f"{meta['threshold']:.4f}"
            set_block_values(p.path / "pack.yaml", "filter", {"topic_model": "topic", "topic_threshold": threshold},
                             lambda cfg: cfg.filter.topic_model == "topic"
                             and abs(cfg.filter.topic_threshold - float(threshold)) <= 1e-9)
        except SlmragError as exc:
            _fail(exc)
        if as_json:
            print(json.dumps(meta, indent=2))
            return
        cv = meta["cross_validated"]
        out.print(f"trained the topic gate of '{p.name}' on {meta['in_questions']} of its questions and "
                  f"{meta['out_questions']} of other domains'; threshold {threshold} (cross-validated: "
                  f"{cv['in_gated']:.1%} of its own questions gated, {cv['out_admitted']:.1%} of the others admitted)",
                  highlight=False)
        out.print(f"saved to {p.path / 'topic'}; pack.yaml now uses it (filter.topic_model: topic). Next: slmrag "
                  f"filter calibrate --pack {p.name} --questions DEV.jsonl --out-of-pack OTHER.jsonl", highlight=False,
                  markup=False)
