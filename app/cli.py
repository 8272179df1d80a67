"""The ``slmrag`` command line. Thin: every command parses options and calls into app/ and ingest/.

Exit status: 0 success, 1 some work failed (e.g. a file in a batch), 2 usage errors (unknown pack,
invalid option or question). Errors print as one readable message, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from app.commands.common import IndexDirOpt, IngestProgress, JsonOpt, PackOpt, err, fail, out
from app.errors import SlmragError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Private, offline Q&A over your documents with small language models.")
packs_app = typer.Typer(no_args_is_help=True, help="List, inspect, validate, create and share domain packs.")
filter_app = typer.Typer(no_args_is_help=True, help="Train and calibrate the relevance filter of a pack.")
app.add_typer(packs_app, name="packs")
app.add_typer(filter_app, name="filter")

# ---------------------------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    paths: List[Path] = typer.Argument(..., help="Files or folders (recursive): .pdf, .txt, .md, .html."),
    pack: str = PackOpt,
    index_dir: Optional[Path] = IndexDirOpt,
    as_json: bool = JsonOpt,
    no_wait: bool = typer.Option(False, "--no-wait", help="Fail at once if another ingest holds the index."),
    index_kind: Optional[str] = typer.Option(
        None, "--index-kind", help="Dense index kind for this index: flat, hnsw, ivfpq, or auto (the pack's "
        "index.kind and threshold). Remembered by the index; an existing index is converted when this ingest "
        "commits."),
) -> None:
    """Add documents to a pack's index (unchanged files are skipped, changed ones replaced)."""
    try:
        from app.errors import InputError
        from app.packs import load_pack
        from app.vector_index import KINDS
        from app.pacing import lower_process_priority
        from ingest.ingestor import Ingestor

        if index_kind is not None and index_kind not in ("auto", *KINDS):
            raise InputError(f"--index-kind {index_kind!r} is not a kind; use one of: auto, {', '.join(KINDS)}.")

        lower_process_priority()  # answers (UI, `slmrag ask`) get the cores first; see app/pacing.py
        p = load_pack(pack, index_dir)
        # Progress goes to stderr (and only to a terminal), so --json output on stdout stays parseable.
        summary = Ingestor(p, index_kind=index_kind).ingest(paths, progress=IngestProgress(),
                                     on_wait=lambda m: err.print(m, markup=False, highlight=False), wait=not no_wait)
    except SlmragError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        rate = f" ({summary.chunks / summary.seconds:.1f} chunks/s)" if summary.seconds and summary.chunks else ""
        out.print(f"added {len(summary.added)}, updated {len(summary.updated)}, skipped {len(summary.skipped)} "
                  f"unchanged, failed {len(summary.failed)}; {summary.chunks} new chunks from {summary.pages} "
                  f"pages in {summary.seconds:.1f}s{rate}", highlight=False)
        if summary.rechunked:
            out.print(f"({len(summary.rechunked)} of the updated files were unchanged and chunked again: the pack's "
                      "chunking settings or slmrag's chunking rules changed since they were ingested)", highlight=False)
        for f in summary.failed:
            err.print(f"[red]failed:[/] {f['error']}", highlight=False)
    raise typer.Exit(0 if summary.ok else 1)


@app.command()
def remove(
    paths: List[str] = typer.Argument(..., help="Document paths (or file names) to delete from the index."),
    pack: str = PackOpt,
    index_dir: Optional[Path] = IndexDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete documents' chunks from a pack's index."""
    try:
        from app.packs import load_pack
        from ingest.ingestor import Ingestor

        removed = Ingestor(load_pack(pack, index_dir)).remove(paths)
    except SlmragError as exc:
        fail(exc)
    if as_json:
        print(json.dumps({"removed": removed}))
    else:
        for r in removed:
            out.print(f"removed {r}", highlight=False)


@app.command()
def status(
    pack: str = PackOpt,
    index_dir: Optional[Path] = IndexDirOpt,
    check: bool = typer.Option(False, "--check", help="Verify the vector file and the metadata agree."),
    as_json: bool = JsonOpt,
) -> None:
    """Documents and chunks in a pack's index."""
    from app.packs import load_pack
    from app.store import IndexStore

    try:
        p = load_pack(pack, index_dir)
        store = IndexStore(p.index_dir)
        docs = store.documents()
        problems = store.check() if check else []
        index = store.index_info()
    except SlmragError as exc:
        fail(exc)
    info = {
        "pack": p.name, "index_dir": str(p.index_dir), "exists": store.exists(), "generation": store.generation(),
        "documents": len(docs), "chunks": sum(d.n_chunks for d in docs.values()), "index": index,
        "files": [{"name": d.name, "path": d.path, "pages": d.pages, "chunks": d.n_chunks} for d in sorted(docs.values(), key=lambda d: d.name)],
    }
    if check:
        info["consistent"] = not problems
        info["problems"] = problems
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(f"pack {p.name}: {info['documents']} documents, {info['chunks']} chunks in {p.index_dir} "
                  f"(generation {info['generation']})", highlight=False)
        params = ", ".join(f"{k} {v}" for k, v in index["params"].items())
        out.print(f"dense index: {index['kind']}{f' ({params})' if params else ''}, {index['bytes'] / 1e6:.1f} MB in "
                  f"{', '.join(index['files']) or 'no files'}", highlight=False)
        for f in info["files"]:
            pages = f" {f['pages']} pages," if f["pages"] else ""
            out.print(f"  {f['name']}:{pages} {f['chunks']} chunks", highlight=False)
        if check:
            out.print("consistent: yes" if not problems else "consistent: NO\n  " + "\n  ".join(problems))
    if check and problems:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- ask
@app.command()
def ask(
    question: str = typer.Argument(..., help="Your question."),
    pack: str = PackOpt,
    index_dir: Optional[Path] = IndexDirOpt,
    k: Optional[int] = typer.Option(None, "--k", min=1, max=50, help="Passages to retrieve (default: the pack's)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Filter threshold (default: the pack's)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, max=4096, help="Most tokens to generate."),
    doc: Optional[str] = typer.Option(None, "--doc", help="Restrict retrieval to one document (file name or path)."),
    filter_kind: Optional[str] = typer.Option(None, "--filter", help="Override the filter: none, cosine, cross_encoder, slm_judge."),
    as_json: bool = JsonOpt,
) -> None:
    """Answer a question from a pack's documents, streaming, with citations."""
    from app.assistant import Assistant, AskOptions
    from app.packs import load_pack
    from app.queueing import ahead_message

    try:
        p = load_pack(pack, index_dir)
        if threshold is not None and (filter_kind or p.config.filter.kind) == "none":
            err.print(f"note: --threshold has no effect: pack '{p.name}' filters no passage (filter.kind none"
                      + (", behind its question gate" if p.config.filter.gate is not None else "")
                      + "); add --filter cosine to drop passages under it.", highlight=False)
        assistant = Assistant(p)
        stream = assistant.ask(question, AskOptions(k=k, threshold=threshold, max_tokens=max_tokens, doc=doc,
                                                    filter=filter_kind),
                               on_position=lambda ahead: err.print(f"[dim]{ahead_message(ahead)}[/]", highlight=False))
        for piece in stream:
            if not as_json:
                sys.stdout.write(piece)
                sys.stdout.flush()
        answer = stream.answer
    except SlmragError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(answer.to_json(), indent=2))
        return
    sys.stdout.write("\n\n")
    label = "Nearest sources" if answer.abstained else "Sources"
    out.print(f"[bold]{label}:[/]")
    for c in (answer.nearest if answer.abstained else answer.citations):
        page = f" p.{c['page']}" if c.get("page") else ""
        out.print(f"  [{c['n']}] {c['name']}{page}", highlight=False, markup=False)
    if answer.grounded is False and not answer.abstained:
        out.print(f"[bold yellow]Not supported by the cited passages[/] (support {answer.support['score']:.2f}; "
                  f"missing: {', '.join(answer.support['missing'][:5])}) - check the sources before relying on it.")
    elif answer.decided_by and answer.decided_by != "filter":
        score = f" {answer.support['score']:.2f}" if answer.support else ""
        err.print(f"[dim]{answer.shape} answer; checked against its sources: {answer.decided_by}{score}[/]", highlight=False)
    if answer.disclaimer:
        out.print(f"\n[dim]{answer.disclaimer}[/]", highlight=False)
    t = answer.timings
    err.print(f"[dim]retrieve {t['retrieve_s']:.2f}s, filter {t['filter_s']:.2f}s, first token {t['first_token_s']:.2f}s, "
              f"total {t['total_s']:.2f}s, {t.get('tokens_per_s') or 0:.0f} tok/s[/]", highlight=False)


# ---------------------------------------------------------------------------------------------- ui
@app.command()
def ui(
    port: int = typer.Option(8501, "--port", help="Port to serve on (loopback only)."),
    pack: Optional[str] = typer.Option(None, "--pack", "-p", help="Pack selected at start."),
    headless: bool = typer.Option(False, "--headless", help="Do not open a browser."),
) -> None:
    """Start the chat UI in your browser (ingests a pack's starter corpus on first use)."""
    import subprocess

    from app.env import checkout_root

    # The page inside the package (not the checkout's streamlit_app.py), so an installed wheel runs it too.
    script = Path(__file__).resolve().parent / "ui" / "streamlit_app.py"
    env = dict(os.environ)
    if pack:
        env["SLMRAG_DEFAULT_PACK"] = pack
    root = checkout_root()
    if root:  # the page imports this checkout's app, not another install's (Streamlit puts only app/ui/ on the path)
        env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.headless", "true" if headless else "false",
           "--theme.primaryColor", "#2f6f8f", "--client.toolbarMode", "minimal"]
    raise typer.Exit(subprocess.call(cmd, env=env))


# ---------------------------------------------------------------------------------------------- packs
@packs_app.command("list")
def packs_list(as_json: bool = JsonOpt) -> None:
    """List available packs."""
    from app.packs import discover, load_pack_dir

    rows = []
    for name, path in sorted(discover().items()):
        try:
            p = load_pack_dir(path)
            rows.append({"name": name, "title": p.config.title, "version": p.config.version, "path": str(path), "valid": True})
        except SlmragError as exc:
            rows.append({"name": name, "title": "", "version": "", "path": str(path), "valid": False, "error": str(exc)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        flag = "" if r["valid"] else "  [red](invalid: run slmrag packs validate)[/]"
        out.print(f"{r['name']:<12} {r['title']} (v{r['version']}){flag}  [dim]{r['path']}[/]", highlight=False)


@packs_app.command("show")
def packs_show(name: str = typer.Argument(...), as_json: bool = JsonOpt) -> None:
    """Show a pack's full configuration."""
    from app.packs import load_pack

    try:
        p = load_pack(name)
    except SlmragError as exc:
        fail(exc)
    data = p.config.model_dump()
    data["path"] = str(p.path)
    data["index_dir"] = str(p.index_dir)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        import yaml

        out.print(yaml.safe_dump(data, sort_keys=False), highlight=False, markup=False)


@packs_app.command("validate")
def packs_validate(path: Path = typer.Argument(..., help="A pack folder (or name).")) -> None:
    """Validate a pack: settings, prompt templates, corpus folder."""
    from app.packs import load_pack

    try:
        p = load_pack(path)
    except SlmragError as exc:
        fail(exc)
    out.print(f"ok: pack '{p.name}' ({p.config.title}) at {p.path}", highlight=False)


def _register_commands() -> None:
    import importlib

    from app.commands import MODULES

    for name in MODULES:
        importlib.import_module(f"app.commands.{name}").register(app, packs_app, filter_app)


_register_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
