"""``slmrag eval``: measure a pack on a question set, side by side with a naive RAG baseline.

Thin: parses options, shows a rich progress bar on stderr, calls :func:`app.evaluation.runner.run_eval`
and writes the report with :mod:`app.evaluation.report`. See ``docs/eval.md``.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer


def escape(text: str) -> str:
    """``text`` shown as written by rich, not read as markup (a variant's name, ``slmrag[base]``, looks like a tag)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class _RichEvalProgress:
    """One rich progress bar per stage (ingest, questions, ...) on stderr."""

    def __init__(self, console, enabled: bool):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("[dim]{task.fields[detail]}"), console=console, disable=not enabled,
                                 transient=False, redirect_stdout=False, redirect_stderr=False)
        self.task = None
        self.started = False

    def stage(self, name: str, total: int | None) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        if self.task is not None:
            t = self.progress.tasks[-1]
            if t.total is not None:
                self.progress.update(self.task, completed=t.total)
        self.task = self.progress.add_task(escape(name), total=total, detail="")  # "slmrag[base]" is not markup

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def detail(self, text: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, detail=escape(text[-48:]))

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/]", highlight=False)

    def finish(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


def register(app, packs_app, filter_app) -> None:
    @app.command("eval")
    def eval_command(
        pack: str = typer.Option(..., "--pack", "-p", help="Domain pack name (see `slmrag packs list`) or folder."),
        questions: Path = typer.Option(..., "--questions", "-q", help="Question set, JSONL (format: docs/eval.md)."),
        corpus: Optional[Path] = typer.Option(
            None, "--corpus", help="Ingest this folder into a scratch index first (never the pack's own index). "
            "Without it the pack's index is evaluated."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1,
                                            help="Run only N questions (taken round-robin across sources)."),
        out: Path = typer.Option(Path("ev-out"), "--out", "-o",
                                 help="Folder for report.json, report.md and the PNG plots."),
        no_answers: bool = typer.Option(False, "--no-answers", help="Skip generation: retrieval metrics only (fast)."),
        no_naive: bool = typer.Option(False, "--no-naive", help="Skip the naive baseline (a second run that only "
                                      "varies slmrag, e.g. with --no-adapter)."),
        no_adapter: bool = typer.Option(False, "--no-adapter", help="Answer with the base model, without the pack's "
                                        "LoRA adapter (to measure what the adapter adds)."),
        no_filter: bool = typer.Option(False, "--no-filter", help="Keep every retrieved passage (the pack's relevance "
                                       "filter and gate off), to measure what the filter adds."),
        variant: List[str] = typer.Option(
            [], "--variant", metavar="NAME[=VALUE]", help="Also run slmrag with one change, on the same questions, beside it in the report "
            "(repeatable): base (without the adapter), no-filter, cosine (the cosine filter; cosine=T for a given "
            "threshold, else calibrated on these questions to keep 95 % of gold), trained (the pack's relevance "
            "model at the threshold filter calibrate recorded beside it; trained=T for another)."),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, max=4096,
                                                 help="Most tokens per answer (default: the pack's)."),
        k: int = typer.Option(10, "--k", min=1, max=50, help="Retrieval depth for recall@k and MRR."),
        naive_k: int = typer.Option(4, "--naive-k", min=1, max=20,
                                    help="Passages the naive baseline stuffs into the prompt (LangChain's default 4)."),
        keep_index: bool = typer.Option(False, "--keep-index",
                                        help="Keep the scratch index in <out>/index instead of deleting it."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Measure a pack on a question set (recall, filter, answers, latency), side by side with naive RAG."""
        from rich.console import Console
        from rich.table import Table

        from app.commands.common import fail, invoked_command
        from app.errors import SlmragError
        from app.evaluation.report import summary_rows, write_report
        from app.evaluation.runner import EvalOptions, run_eval

        err = Console(stderr=True)
        if sys.argv[1:2] == ["eval"]:
            command = invoked_command()
        else:  # called in-process (tests): rebuild it from the options
            command = (f"slmrag eval --pack {shlex.quote(pack)} --questions {shlex.quote(str(questions))}"
                       + (f" --corpus {shlex.quote(str(corpus))}" if corpus else "")
                       + (f" --limit {limit}" if limit else "") + f" --out {shlex.quote(str(out))}"
                       + (" --no-answers" if no_answers else "") + (f" --max-tokens {max_tokens}" if max_tokens else "")
                       + (" --no-adapter" if no_adapter else "") + (" --no-naive" if no_naive else "")
                       + (" --no-filter" if no_filter else "")
                       + "".join(f" --variant {shlex.quote(v)}" for v in variant))
        enabled = not quiet and (err.is_terminal or os.environ.get("SLMRAG_PROGRESS") == "1")
        progress = _RichEvalProgress(err, enabled)
        opts = EvalOptions(pack=pack, questions=questions, corpus=corpus, limit=limit, out=out,
                           answers=not no_answers, max_tokens=max_tokens, k=k, naive_k=naive_k,
                           keep_index=keep_index, command=command, adapter=not no_adapter,
                           naive=not no_naive, filter=not no_filter, variants=tuple(variant))
        try:
            report = run_eval(opts, progress)
            paths = write_report(report, out)
        except SlmragError as exc:
            fail(exc)
        meta = report["meta"]
        table = Table(title=f"pack {meta['pack']['name']}: {meta['questions_run']} questions, "
                            f"{meta['wall_s']} s", show_lines=False)
        from app.evaluation.report import variant_systems

        for col in ("metric", "slmrag", *variant_systems(meta), "naive", "slmrag / naive"):
            table.add_column(escape(col), justify="left" if col == "metric" else "right")
        for row in summary_rows(report):
            table.add_row(*row)
        Console().print(table)
        Console().print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False, soft_wrap=True)
