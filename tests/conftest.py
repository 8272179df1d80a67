"""Shared test helpers: real PDFs generated with fpdf2, packs pointed at temporary index folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# llama.cpp spins its threads: with as many threads as cores, any other busy process (Chromium, a
# Streamlit server, a parallel job) slows decoding 20x. Tests assert behaviour, not speed, so they use
# one inference thread; benchmarks (bench/) use the default of all cores.
os.environ.setdefault("SLMRAG_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A real text PDF, one string per page (latin-1 text, Helvetica)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


#: What a built-in pack ships that was trained on its own data, and the pack.yaml lines pointing at it.
TRAINED_FOLDERS = ("adapter", "filter", "label_reader", "extract_selector", "label_selector", "topic")
TRAINED_SETTINGS = ("adapter:", "model: filter", "label_reader:", "extract_selector:", "label_selector:", "topic_model:",
                    "topic_threshold:")


def tiny_pack_dir(folder: Path, name: str, docs: dict[str, str], base: str = "medical") -> Path:
    """A copy of built-in pack ``base`` named ``name`` in ``folder``, with ``docs`` as its corpus and none of
    its trained models (a test trains its own, or uses the packaged models as they come)."""
    import shutil

    from app.packs import load_pack

    shutil.copytree(load_pack(base).path, folder, ignore=shutil.ignore_patterns("corpus", *TRAINED_FOLDERS))
    text = (folder / "pack.yaml").read_text(encoding="utf-8").replace(f"name: {base}", f"name: {name}")
    (folder / "pack.yaml").write_text("\n".join(l for l in text.splitlines()
                                                if not l.strip().startswith(TRAINED_SETTINGS)) + "\n")
    (folder / "corpus").mkdir()
    for doc, body in docs.items():
        (folder / "corpus" / doc).write_text(body, encoding="utf-8")
    return folder


@pytest.fixture
def pdf_factory():
    return write_pdf


@pytest.fixture
def tmp_pack(tmp_path, monkeypatch):
    """Load a built-in pack with its index in a temporary folder (never indexes/)."""
    from app.packs import load_pack

    monkeypatch.setenv("SLMRAG_INDEX_DIR", str(tmp_path / "indexes"))

    def make(name: str = "medical"):
        return load_pack(name, tmp_path / "indexes" / name)

    return make


@pytest.fixture(scope="session")
def prebuilt_indexes(tmp_path_factory) -> Path:
    """The medical and legal starter corpora indexed once per session; UI tests copy the folder."""
    from app.packs import load_pack
    from ingest.starter import ensure_index

    base = tmp_path_factory.mktemp("slmrag-ui-prebuilt")
    for name in ("medical", "legal"):
        ensure_index(load_pack(name, base / name))
    return base
