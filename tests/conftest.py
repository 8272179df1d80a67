"""Shared test helpers: real PDFs generated with fpdf2, packs pointed at temporary index folders."""

from __future__ import annotations

import os
import re
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


# A pack whose filter is its trained model, in a test that is not about the filter, gets the packaged models' filter
# instead: cosine at medical's calibrated threshold (docs/filter.md; shipped until stop 36), without the gate, floor
# and keep fitted around the model. The model was trained on abstracts and judges a test's one-line documents as
# it likes; such a test checks its own feature, not what the model makes of them.
TRAINED_FILTER = ("kind: cross_encoder", "threshold:", "gate:", "cosine_floor:", "cosine_keep:", "precision:", "order:", "read_tokens:",
                  "relative_to_best:", "rank_prior:")
COSINE_FILTER = "filter:\n  kind: cosine\n  threshold: 0.3657\n"


def with_cosine_filter(pack_yaml: str) -> str:
    """``pack_yaml`` (a pack.yaml's text) with the packaged models' filter for its trained one (see above)."""
    if "kind: cross_encoder" not in pack_yaml:
        return pack_yaml
    head, tail = pack_yaml.split("filter:\n", 1)
    body, rest = re.match(r"((?:[ \t]+.*\n|\n)*)(.*)", tail, re.DOTALL).groups()
    kept = [l for l in body.splitlines() if not l.strip().startswith(TRAINED_FILTER) and not l.strip().startswith("#")]
    return head + COSINE_FILTER + "".join(l + "\n" for l in kept if l.strip()) + rest


def tiny_pack_dir(folder: Path, name: str, docs: dict[str, str], base: str = "medical") -> Path:
    """A copy of built-in pack ``base`` named ``name`` in ``folder``, with ``docs`` as its corpus and none of
    its trained models (a test trains its own, or uses the packaged models as they come)."""
    import shutil

    from app.packs import load_pack

    shutil.copytree(load_pack(base).path, folder, ignore=shutil.ignore_patterns("corpus", *TRAINED_FOLDERS))
    text = with_cosine_filter((folder / "pack.yaml").read_text(encoding="utf-8").replace(f"name: {base}", f"name: {name}"))
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
