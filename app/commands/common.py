"""What the CLI's commands share: the consoles, the common options, the error exit and ingest progress.

:mod:`app.cli` and every module of :mod:`app.commands` take these from here, never from each other
(``app.cli`` imports the command modules to register them).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import NoReturn

import typer
from rich.console import Console

from app.errors import ConfigError, InputError, PackNotFound, SlmragError

err = Console(stderr=True)
out = Console()

PackOpt = typer.Option("medical", "--pack", "-p", help="Domain pack name (see `slmrag packs list`) or folder.")
IndexDirOpt = typer.Option(None, "--index-dir", help="Use this folder as the pack's index (default: $SLMRAG_INDEX_DIR/<pack>, else indexes/<pack> of a checkout, else ~/.local/share/slmrag/indexes/<pack>).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def fail(exc: SlmragError) -> NoReturn:
    """Print the error as one message (no traceback) and exit: 2 for usage errors, 1 otherwise."""
    code = 2 if isinstance(exc, (ConfigError, PackNotFound, InputError)) else 1
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


class IngestProgress:
    """Progress bar on stderr for ingest: files done of all, chunks embedded and their rate, elapsed time
    and the time left (estimated from the files done over the last few minutes, so one slow file does not
    swing it); an :class:`ingest.ingestor.ProgressSink`. Shown when stderr is a terminal (or
    SLMRAG_PROGRESS=1), so stdout stays clean for ``--json``."""

    def __init__(self, enabled: bool = True):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.enabled = enabled and err.is_terminal or os.environ.get("SLMRAG_PROGRESS") == "1"
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("files, {task.fields[chunks]} chunks ({task.fields[rate]}/s)"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[name]}"),
                                 console=err, disable=not self.enabled, transient=False, speed_estimate_period=300)
        self.task = None
        self.n_chunks = 0
        self.t0 = 0.0

    def start(self, total_files: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("ingest", total=total_files, chunks=0, rate=0, name="")

    def file(self, name: str) -> None:
        self.t0 = self.t0 or time.monotonic()  # the rate counts from the first file ready, not the model load
        self.progress.update(self.task, name=name[-40:])

    def chunks(self, n: int) -> None:
        self.n_chunks += n
        self.t0 = self.t0 or time.monotonic()
        rate = self.n_chunks / max(1e-3, time.monotonic() - self.t0)
        self.progress.update(self.task, chunks=self.n_chunks, rate=f"{rate:.0f}")

    def advance(self) -> None:
        self.progress.advance(self.task)

    def finish(self) -> None:
        self.progress.stop()


def training_assistant(pack, train, index_dir=None, show_progress: bool = True):
    """An Assistant of ``pack`` over a training folder's corpus (``questions.jsonl`` + ``corpus/``), for
    building training examples with the pack's own retrieval; returns (assistant, rows, data hash).

    The corpus is ingested once into ``index_dir`` (default: a cache folder named by the data's hash, so
    adapter and filter training share it and a rerun skips the ingest)."""
    from pathlib import Path

    from app.assistant import Assistant
    from app.env import cache_dir
    from app.evaluation.questions import load_questions
    from app.training.adapter import data_hash
    from ingest.ingestor import Ingestor

    train = Path(train).expanduser()
    if not (train / "questions.jsonl").is_file() or not (train / "corpus").is_dir():
        raise InputError(f"{train} needs questions.jsonl and a corpus/ folder (the format of `slmrag eval`'s "
                         "question files, docs/eval.md).")
    digest = data_hash(train)
    idx = index_dir or cache_dir() / "train-index" / f"{pack.name}-{digest[:12]}"
    tp = pack.with_index_dir(idx)
    summary = Ingestor(tp).ingest([train / "corpus"], progress=IngestProgress(show_progress))
    if summary.failed:
        err.print(f"[yellow]{len(summary.failed)} training documents could not be read; going on without them.[/]")
    rows = load_questions(train / "questions.jsonl")
    return Assistant(tp).load(generator=False), rows, digest


def invoked_command() -> str:
    """The command line this process was started with, as ``slmrag ...`` (recorded in trained models' and
    reports' metadata so a figure can be reproduced)."""
    return "slmrag " + " ".join(shlex.quote(a) for a in sys.argv[1:])
