"""``slmrag packs new / export / install``: create a pack from another, and share packs as one file.

The work is in :mod:`app.pack_archive`; these commands parse options and print results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from app.errors import SlmragError


def register(app, packs_app, filter_app) -> None:
    from app.commands.common import JsonOpt, err, fail, out

    @packs_app.command("new")
    def packs_new(
        name: str = typer.Argument(..., help="Name of the new pack (lowercase letters, digits, '-', '_')."),
        source: str = typer.Option("medical", "--from", help="Existing pack (name or folder) to copy."),
        with_corpus: bool = typer.Option(False, "--with-corpus", help="Also copy the source pack's starter corpus."),
        title: Optional[str] = typer.Option(None, "--title", help="Title of the new pack (default: the source's)."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Create a new pack in the packs folder by copying an existing one (settings and prompts)."""
        from app.pack_archive import new_pack

        try:
            path = new_pack(name, source, with_corpus=with_corpus, title=title)
        except SlmragError as exc:
            fail(exc)
        if as_json:
            print(json.dumps({"name": name, "path": str(path)}))
            return
        out.print(f"created pack '{name}' at {path} (from '{source}')", highlight=False)
        out.print(f"next: edit {path / 'pack.yaml'} and the prompts, put documents in {path / 'corpus'}, then run "
                  f"slmrag packs validate {path} and slmrag ingest {path / 'corpus'} --pack {name}",
                  highlight=False, markup=False)

    @packs_app.command("export")
    def packs_export(
        name: str = typer.Argument(..., help="Pack name (or folder) to export."),
        file: Path = typer.Argument(..., help="Archive to write, e.g. mypack.slmrag.tar.gz"),
        with_index: bool = typer.Option(False, "--with-index", help="Include the built index (meta.sqlite and vectors)."),
        no_corpus: bool = typer.Option(False, "--no-corpus", help="Leave the starter corpus out."),
        force: bool = typer.Option(False, "--force", help="Overwrite FILE if it exists."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Write a pack (config, prompts, corpus, optionally its index) to one checksummed .tar.gz."""
        from app.pack_archive import export_pack

        try:
            result = export_pack(name, file, with_index=with_index, with_corpus=not no_corpus, overwrite=force)
        except SlmragError as exc:
            fail(exc)
        if as_json:
            print(json.dumps({"path": str(result.path), "files": result.files, "skipped": result.skipped,
                              "with_index": result.with_index, "bytes": result.bytes}, indent=2))
            return
        what = " with its index" if result.with_index else ""
        out.print(f"exported {len(result.files)} files{what} to {result.path} ({result.bytes / 1024:.1f} KiB)",
                  highlight=False)
        for s in result.skipped:
            err.print(f"[yellow]skipped:[/] {s}", highlight=False)

    @packs_app.command("install")
    def packs_install(
        file: Path = typer.Argument(..., help="A pack archive made by `slmrag packs export`."),
        force: bool = typer.Option(False, "--force", help="Replace an installed pack (and index) of the same name."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Verify a pack archive (checksums, no code, no links, no path escapes) and install it."""
        from app.pack_archive import install_pack

        try:
            result = install_pack(file, force=force)
        except SlmragError as exc:
            fail(exc)
        if as_json:
            print(json.dumps({"name": result.name, "path": str(result.path),
                              "index_dir": str(result.index_dir) if result.index_dir else None,
                              "files": result.files, "replaced": result.replaced, "notes": result.notes}, indent=2))
            return
        verb = "replaced" if result.replaced else "installed"
        out.print(f"{verb} pack '{result.name}' at {result.path} ({result.files} files, checksums verified)",
                  highlight=False)
        if result.index_dir:
            out.print(f"index installed at {result.index_dir}", highlight=False)
        for note in result.notes:
            out.print(f"note: {note}", highlight=False, markup=False)
        out.print(f"try: slmrag ask \"...\" --pack {result.name}", highlight=False, markup=False)
