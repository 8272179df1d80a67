"""The `slmrag` command line end to end, in subprocesses, on the real packaged models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["SLMRAG_INDEX_DIR"] = str(tmp_path / "indexes")
    return e


@pytest.fixture
def docs(tmp_path, pdf_factory):
    d = tmp_path / "docs"
    pdf_factory(d / "policy.pdf", [
        "Travel policy. Section 1 covers booking through the approved agency.",
        "Section 2. Economy class is required for flights shorter than six hours. "
        "Business class may be booked for flights of six hours or longer with director approval.",
    ])
    (d / "holidays.txt").write_text("Staff receive twenty-five days of paid annual leave per year.\n")
    return d


def test_ingest_json_status_and_ask_cites_file_and_page(env, docs, tmp_path):
    res = run(["ingest", str(docs), "--pack", "legal", "--json"], env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert set(summary) >= {"added", "updated", "skipped", "failed", "chunks"}
    assert len(summary["added"]) == 2 and summary["failed"] == [] and summary["chunks"] >= 3
    assert (tmp_path / "indexes" / "legal" / "meta.sqlite").exists()

    st = run(["status", "--pack", "legal", "--check", "--json"], env)
    assert st.returncode == 0, st.stderr
    info = json.loads(st.stdout)
    assert info["documents"] == 2 and info["consistent"] is True

    res = run(["ask", "Which class of travel is required for flights shorter than six hours?",
               "--pack", "legal", "--json", "--max-tokens", "40"], env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"answer", "citations", "passages", "abstained", "timings"}
    assert out["answer"].strip() and out["abstained"] is False
    assert set(out["timings"]) >= {"retrieve_s", "filter_s", "first_token_s", "total_s", "tokens_per_s"}
    top = out["passages"][0]
    assert top["name"] == "policy.pdf" and top["page"] == 2
    assert any(c["name"] == "policy.pdf" and c["page"] == 2 for c in out["citations"])
    assert all({"n", "source", "page", "text"} <= set(c) for c in out["citations"])

    text = run(["ask", "How many days of paid annual leave do staff get?", "--pack", "legal", "--max-tokens", "30"], env)
    assert text.returncode == 0, text.stderr
    assert "Sources:" in text.stdout and "holidays.txt" in text.stdout

    # legal keeps every passage of a question its gate admits (filter.kind none): a threshold would change nothing
    noted = run(["ask", "How many days of paid annual leave do staff get?", "--pack", "legal", "--max-tokens", "8",
                 "--threshold", "0.9"], env)
    assert noted.returncode == 0 and "--threshold has no effect" in noted.stderr and "--filter cosine" in noted.stderr


def test_exit_codes(env, docs, tmp_path):
    (docs / "broken.pdf").write_bytes(b"not a pdf at all")
    # The progress bar (forced on, as in a terminal) goes to stderr: stdout stays one JSON document.
    res = run(["ingest", str(docs), "--pack", "finance", "--json"], {**env, "SLMRAG_PROGRESS": "1", "COLUMNS": "200"})
    assert res.returncode == 1
    summary = json.loads(res.stdout)
    assert "3/3 files" in res.stderr and "ETA" in res.stderr, res.stderr
    assert [Path(f["path"]).name for f in summary["failed"]] == ["broken.pdf"]
    assert "Traceback" not in res.stderr

    res = run(["ingest", str(docs), "--pack", "no-such-pack"], env)
    assert res.returncode == 2 and "No pack named 'no-such-pack'" in res.stderr and "Traceback" not in res.stderr

    res = run(["ask", "   ", "--pack", "finance"], env)
    assert res.returncode == 2 and "empty" in res.stderr

    res = run(["ingest"], env)  # missing argument: a usage error
    assert res.returncode == 2

    res = run(["remove", "nothing-here.txt", "--pack", "finance"], env)
    assert res.returncode == 1 and "no such document" in res.stderr

    res = run(["remove", str(docs / "holidays.txt"), "--pack", "finance", "--json"], env)
    assert res.returncode == 0 and json.loads(res.stdout)["removed"][0].endswith("holidays.txt")
