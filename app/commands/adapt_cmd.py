"""``slmrag adapt train``: a LoRA adapter for a pack's generator, trained on labelled rows on CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from app.commands.common import IndexDirOpt, JsonOpt, PackOpt, err, fail, invoked_command, out, training_assistant
from app.errors import SlmragError


def register(app, packs_app, filter_app) -> None:
    adapt_app = typer.Typer(help="Domain adapters (LoRA) for a pack's generator.", no_args_is_help=True)
    app.add_typer(adapt_app, name="adapt")

    @adapt_app.command("train")
    def adapt_train(
        pack: str = PackOpt,
        train: Path = typer.Option(..., "--train", help="A folder with questions.jsonl and corpus/ (the rows to learn from)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Where the adapter goes (default: the pack's adapter/ folder, "
                                               "and pack.yaml's generator.adapter is set to it)."),
        index_dir: Optional[Path] = IndexDirOpt,
        max_examples: int = typer.Option(400, "--max-examples", min=1, help="Most training examples."),
        epochs: int = typer.Option(1, "--epochs", min=1, max=20),
        rank: int = typer.Option(8, "--rank", min=1, max=128, help="LoRA rank."),
        alpha: int = typer.Option(16, "--alpha", min=1, max=512, help="LoRA alpha (scale = alpha / rank)."),
        lr: float = typer.Option(3e-4, "--lr", help="Learning rate."),
        max_len: int = typer.Option(1024, "--max-len", min=128, max=4096, help="Longest training sequence in tokens."),
        drop_gold: float = typer.Option(0.15, "--drop-gold", min=0.0, max=1.0,
                                        help="Share of answerable examples shown without their gold passage (target: not found)."),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Train a LoRA adapter (peft, CPU) on RAFT-style examples built with the pack's own retrieval and prompt."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from app.pack_edit import set_generator_adapter
        from app.packs import load_pack, writable_pack
        from app.store import file_sha256
        from app.training.adapter import build_examples, train_adapter

        try:
            p = load_pack(pack)
            if out_dir is None:  # the adapter goes into the pack
                writable_pack(p)
            assistant, rows, digest = training_assistant(p, train, index_dir, not as_json)
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=err, disable=as_json) as bar:
                task = bar.add_task("examples", total=min(max_examples, len(rows)), info="")
                examples = build_examples(p, assistant, rows, seed=seed, max_examples=max_examples, drop_gold=drop_gold,
                                          progress=lambda n, total: bar.update(task, completed=n, total=total))
                train_task = bar.add_task("training", total=None, info="")

                def on_step(step: int, total: int, loss: float) -> None:
                    bar.update(train_task, completed=step, total=total, info=f"loss {loss:.3f}")

                base = p.config.generator.model
                target = out_dir or (p.path / "adapter")
                from app.models import resolve_model

                base_path = resolve_model(base, p.path)
                info = {"base_model": base, "base_model_sha256": file_sha256(base_path) if isinstance(base_path, Path) else None,
                        "pack": p.name, "train_data": str(train), "train_data_sha256": digest,
                        "command": invoked_command(),
                        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                report = train_adapter(base, examples, target, rank=rank, alpha=alpha, lr=lr, epochs=epochs,
                                       max_len=max_len, seed=seed, base_dir=p.path, progress=on_step, info=info)
            if out_dir is None:
                set_generator_adapter(p.path / "pack.yaml", "adapter")
        except SlmragError as exc:
            fail(exc)
        if as_json:
            print(json.dumps(report.info, indent=2))
        else:
            r = report.to_json()
            out.print(f"adapter: {report.out_dir} - {r['examples']} examples {r['shapes']}, {r['steps']} steps, "
                      f"{r['seconds']} s ({r['tokens_per_s']} tok/s), final loss {r['final_loss']}", highlight=False)

    @adapt_app.command("labels")
    def adapt_labels(
        pack: str = PackOpt,
        train: Path = typer.Option(..., "--train", help="A folder with questions.jsonl and corpus/ (the rows to fit on)."),
        index_dir: Optional[Path] = IndexDirOpt,
        max_rows: int = typer.Option(400, "--max-rows", min=10, help="Most label-routed rows to ask."),
        seed: int = typer.Option(0, "--seed", help="Which rows, when there are more than --max-rows."),
        write: bool = typer.Option(False, "--write", help="Store the offsets as answers.label_bias in pack.yaml."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Fit per-label offsets (answers.label_bias) on training rows asked as the pack asks them: the label
        answers' prior, corrected to the one the rows show. Prints accuracy before, fitted and cross-validated."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from app.pack_edit import set_label_bias
        from app.packs import load_pack, writable_pack
        from app.training import labels as fit

        try:
            p = load_pack(pack)
            if write:
                writable_pack(p)
            labels = list(p.config.answers.labels)
            if "label" not in p.config.answers.shapes:
                raise SlmragError(f"Pack '{p.name}' has no 'label' answers (answers.shapes); there is nothing to fit.")
            assistant, rows, _ = training_assistant(p, train, index_dir, not as_json)
            assistant.load()
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=err, disable=as_json) as bar:
                task = bar.add_task("label rows", total=None)
                scored = fit.collect(assistant, rows, max_rows=max_rows, seed=seed,
                                     progress=lambda i, n: bar.update(task, completed=i, total=n))
            if len(scored) < 10:
                raise SlmragError(f"Only {len(scored)} label-routed training rows kept a passage in {train}; "
                                  "at least 10 are needed to fit offsets.")
            bias = fit.fit_bias(scored, labels)
            result = {"pack": p.name, "rows": len(scored), "label_calibration": p.config.answers.label_calibration,
                      "label_bias": bias, "before": fit.scores(scored, labels, {}),
                      "fitted": fit.scores(scored, labels, bias),
                      "cross_validated": fit.cross_validated(scored, labels), "command": invoked_command()}
            if write:
                set_label_bias(p.path / "pack.yaml", bias)
        except SlmragError as exc:
            fail(exc)
        if as_json:
            print(json.dumps(result, indent=2))
            return
        out.print(f"{len(scored)} training rows; offsets {bias}" + (" written to pack.yaml" if write else ""), highlight=False)
        for name in ("before", "fitted", "cross_validated"):
            r = result[name]
            out.print(f"  {name:16} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  predicted {r['predicted']}",
                      highlight=False)

    @adapt_app.command("reader")
    def adapt_reader(
        pack: str = PackOpt,
        train: Path = typer.Option(..., "--train", help="A folder with questions.jsonl and corpus/ (rows whose answer "
                                   "is one of the pack's labels, with their evidence)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Where the reader goes (default: the pack's "
                                               "label_reader/ folder, and pack.yaml's answers.label_reader is set to it)."),
        index_dir: Optional[Path] = IndexDirOpt,
        max_rows: int = typer.Option(1000, "--max-rows", min=1, help="Most label-routed rows to learn from."),
        epochs: int = typer.Option(6, "--epochs", min=1, max=50),
        rank: int = typer.Option(16, "--rank", min=1, max=128, help="LoRA rank."),
        lr: float = typer.Option(5e-4, "--lr", help="Learning rate of the adapter (the head's is ten times it)."),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Train the label reader: a MiniLM cross-encoder that reads each kept passage and says which of the pack's
        labels it states (or none); 'label' answers then take the verdict of the passage that states one."""
        from app.training.reader import build_examples, train_reader

        def build(assistant, rows, seed, max_rows, progress):
            return build_examples(assistant, rows, list(assistant.pack.config.answers.labels), seed=seed,
                                  max_rows=max_rows, progress=progress)

        def fit(examples, target, p, **kw):
            return train_reader(examples, list(p.config.answers.labels), target, **kw)

        meta, target = _train_answer_model(pack, train, out_dir, index_dir, as_json, shape="label",
                                           setting="label_reader", build=build, fit=fit, max_rows=max_rows, seed=seed,
                                           epochs=epochs, lr=lr, rank=rank)
        if not as_json:
            out.print(f"label reader: {target} - {meta['rows']} rows, {meta['pairs']} passages "
                      f"{meta['examples_by_target']}, {meta['steps']} steps, {meta['seconds']} s, "
                      f"final loss {meta['final_loss']}", highlight=False)

    @adapt_app.command("selector")
    def adapt_selector(
        pack: str = PackOpt,
        train: Path = typer.Option(..., "--train", help="A folder with questions.jsonl and corpus/ (rows with an "
                                   "answer or evidence that is text of their document)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Where the selector goes (default: the pack's "
                                               "extract_selector/ folder, and pack.yaml's answers.extract_selector is set to "
                                               "it; with --shape label: label_selector/ and answers.label_selector)."),
        index_dir: Optional[Path] = IndexDirOpt,
        shape: str = typer.Option("extract", "--shape", help="Which answers it chooses the sentence for: 'extract' "
                                  "(the sentence that answers) or 'label' (the sentence a yes/no answer rests on, "
                                  "taught by the label-routed rows' gold evidence)."),
        max_rows: int = typer.Option(1000, "--max-rows", min=1, help="Most rows of that shape to learn from."),
        epochs: int = typer.Option(3, "--epochs", min=1, max=50),
        rank: int = typer.Option(16, "--rank", min=1, max=128, help="LoRA rank."),
        lr: float = typer.Option(5e-4, "--lr", help="Learning rate of the adapter (the head's is ten times it)."),
        seed: int = typer.Option(0, "--seed"),
        span: bool = typer.Option(False, "--span", help="Also train a span head that marks the answer inside the "
                                  "chosen sentence (from rows whose answer is text of the document): answers are then "
                                  "that part, shown with its sentence. For short answers (COVID-QA's); not for "
                                  "answers written in another form than the text (CUAD's dates)."),
        span_epochs: int = typer.Option(10, "--span-epochs", min=1, max=50, help="Passes of the span model over "
                                        "its sentences (a few hundred: it needs more passes than the ranking)."),
        positives: str = typer.Option("evidence", "--positives", help="Which sentences are taught as answering: "
                                      "'evidence' (inside the row's gold evidence, holding the answer when it is text "
                                      "of it: short answers that recur elsewhere, such as a state name) or 'answer' "
                                      "(any sentence holding the answer word for word)."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Train the sentence selector: a MiniLM cross-encoder that finds the kept passages' sentence that answers
        an 'extract' question; those answers then quote it word for word instead of generating."""
        from app.training.selector import POSITIVES, SHAPES, build_examples, train_selector

        if positives not in POSITIVES:
            fail(SlmragError(f"--positives must be one of {', '.join(POSITIVES)}, not {positives!r}."))
        if shape not in SHAPES:
            fail(SlmragError(f"--shape must be one of {', '.join(SHAPES)}, not {shape!r}."))

        def build(assistant, rows, seed, max_rows, progress):
            return build_examples(assistant, rows, seed=seed, max_rows=max_rows, positives=positives, shape=shape,
                                  progress=progress)

        def fit(examples, target, p, info=None, **kw):
            return train_selector(examples, target, span=span, span_epochs=span_epochs,
                                  info={**(info or {}), "positives_rule": positives, "shape": shape}, **kw)

        meta, target = _train_answer_model(pack, train, out_dir, index_dir, as_json, shape=shape,
                                           setting=f"{shape}_selector", build=build, fit=fit, max_rows=max_rows,
                                           seed=seed, epochs=epochs, lr=lr, rank=rank)
        if not as_json:
            spans = f", {meta['span_examples']} with a marked answer" if "span_examples" in meta else ""
            out.print(f"sentence selector: {target} - {meta['rows']} rows, {meta['pairs']} sentences "
                      f"({meta['positives']} answering{spans}), {meta['steps']} steps, {meta['seconds']} s, "
                      f"final loss {meta['final_loss']}", highlight=False)

    @adapt_app.command("record")
    def adapt_record(
        pack: str = PackOpt,
        report: Path = typer.Option(..., "--report", help="report.json of `slmrag eval` on the full dev set, adapter on."),
        base: Optional[Path] = typer.Option(None, "--base", help="report.json of the same run with --no-adapter, "
                                            "recorded beside it."),
    ) -> None:
        """Record a full eval's answer figures in the pack's adapter metadata (adapter/adapter.json, under "dev"),
        and in its label reader's and sentence selector's (reader.json, selector.json) when the report used them."""
        from app.evaluation.runner import ANSWER_MODELS
        from app.pair_model import weights_sha256
        from app.packs import load_pack, writable_pack
        from app.pack_edit import record_dev_figures
        from app.training.adapter import ADAPTER_INFO, adapter_dev_figures

        try:
            p = writable_pack(load_pack(pack))
            folder = p.config.generator.adapter
            if not folder:
                raise SlmragError(f"Pack '{p.name}' has no generator.adapter; there is nothing to record figures for.")
            measured = _read_report(report)
            info_files = [p.path / folder / ADAPTER_INFO]
            figures, command = adapter_dev_figures(p, measured, _read_report(base) if base else None)
            used = ((measured.get("meta") or {}).get("pack") or {}).get("answers") or {}
            for setting, info_name in ANSWER_MODELS.items():
                own = getattr(p.config.answers, setting)
                sha = weights_sha256(p.path / own) if own else None
                if sha is not None and (used.get(setting) or {}).get("sha256") == sha:
                    info_files.append(p.path / own / info_name)  # the report measured this very model
            for info_file in info_files:
                record_dev_figures(info_file, figures, command)
        except SlmragError as exc:
            fail(exc)
        out.print(f"recorded in {', '.join(map(str, info_files))}: {json.dumps(figures['tasks'])}", highlight=False)


def _read_report(path: Path) -> dict:
    from app.errors import InputError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable report.json of `slmrag eval` ({exc}).") from exc


def _train_answer_model(pack: str, train: Path, out_dir: Optional[Path], index_dir: Optional[Path], as_json: bool, *,
                        shape: str, setting: str, build, fit, max_rows: int, seed: int, **train_kw) -> tuple[dict, Path]:
    """Train one of a pack's answer models (the label reader, the sentence selector) on a training folder, with
    progress bars; by default into the pack's ``<setting>/`` folder, then ``answers.<setting>`` is set to it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from app.pack_edit import set_block_values
    from app.packs import load_pack, writable_pack

    try:
        p = load_pack(pack)
        if out_dir is None:
            writable_pack(p)
        if shape not in p.config.answers.shapes:
            raise SlmragError(f"Pack '{p.name}' has no '{shape}' answers (answers.shapes); this model would never be used.")
        assistant, rows, digest = training_assistant(p, train, index_dir, not as_json)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, disable=as_json) as bar:
            task = bar.add_task(f"{shape} rows", total=None, info="")
            examples = build(assistant, rows, seed, max_rows, lambda i, n: bar.update(task, completed=i, total=n))
            train_task = bar.add_task("training", total=None, info="")
            target = out_dir or (p.path / setting)
            info = {"pack": p.name, "train_data": str(train), "train_data_sha256": digest,
                    "command": invoked_command(), "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            meta = fit(examples, target, p, seed=seed, info=info, **train_kw,
                       progress=lambda s, n, loss: bar.update(train_task, completed=s, total=n, info=f"loss {loss:.3f}"))
        if out_dir is None:
            set_block_values(p.path / "pack.yaml", "answers", {setting: setting},
                             lambda cfg: getattr(cfg.answers, setting) == setting)
    except SlmragError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(meta, indent=2))
    return meta, target
