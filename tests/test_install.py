"""A non-editable install (`pip install .`, the wheel) is self-contained: it ships the UI page and the
built-in packs, and runs from a folder outside any checkout (`slmrag packs list`, `slmrag ui` serving).

The wheel is built from a clean copy of the sources without build isolation (nothing is downloaded) and
installed with --no-deps into a fresh virtual environment that sees the packages of the Python running
the tests, so its dependencies are the ones already installed here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

BUILTIN_PACKS = ("medical", "legal", "finance")
# What the wheel is built from (pyproject.toml names README.md as the long description).
SOURCES = ("pyproject.toml", "README.md", "app", "ingest", "domains")


def _files(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under root, without bytecode caches."""
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_a_checkout_keeps_its_folders_and_the_data_folder_follows_xdg(monkeypatch, tmp_path):
    from app.env import checkout_root, data_dir
    from app.packs import builtin_packs_dir, index_root, packs_dir

    for var in ("SLMRAG_INDEX_DIR", "SLMRAG_PACKS_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert checkout_root() == REPO
    assert (builtin_packs_dir(), packs_dir(), index_root()) == (REPO / "domains", REPO / "domains", REPO / "indexes")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "slmrag"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # invalid by the XDG spec: ignored
    assert data_dir() == tmp_path / ".local" / "share" / "slmrag"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert data_dir() == tmp_path / ".local" / "share" / "slmrag"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:  # a copy: an in-place build would reuse a stale build/ folder of the checkout
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"building the wheel failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    (whl,) = out.glob("slmrag-*.whl")
    return whl


def test_wheel_ships_the_code_the_ui_and_the_builtin_packs(wheel):
    with zipfile.ZipFile(wheel) as z:
        sizes = {i.filename: i.file_size for i in z.infolist()}
        entry_points = next(z.read(n).decode() for n in sizes if n.endswith(".dist-info/entry_points.txt"))
    assert "slmrag = app.cli:main" in entry_points
    assert "app/ui/streamlit_app.py" in sizes
    # Every module of the checkout, so a package folder missing from pyproject.toml's list fails here.
    for pkg in ("app", "ingest"):
        missing = [f"{pkg}/{rel}" for rel in _files(REPO / pkg) if rel.endswith(".py") and f"{pkg}/{rel}" not in sizes]
        assert not missing, f"modules missing from the wheel (add their package to pyproject.toml): {missing}"
    for pack in BUILTIN_PACKS:
        files = _files(REPO / "domains" / pack)
        shipped = {n[len(f"app/domains/{pack}/"):]: s for n, s in sizes.items() if n.startswith(f"app/domains/{pack}/")}
        assert shipped == files, f"{pack}: the wheel's files differ from domains/{pack}"
        for part in ("pack.yaml", "prompts/system.j2", "prompts/answer.j2", "prompts/abstain.j2"):
            assert part in shipped, f"{pack}: {part} not in the wheel"
        for folder in ("corpus/", "adapter/", "filter/"):
            assert any(f.startswith(folder) for f in shipped), f"{pack}: nothing from {folder} in the wheel"
        assert any(f.endswith(".safetensors") for f in shipped) and any(f.endswith(".gguf") for f in shipped)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """The wheel installed into a fresh venv; commands run in a folder outside the checkout."""
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # The running Python may itself be a venv (scripts/test.sh's .venv), whose packages a new venv's
    # --system-site-packages would not see: add its site folders (with their .pth files) after the new
    # venv's own, so the wheel's app shadows any installed or editable slmrag of the running Python.
    site_dir = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    outer = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(site_dir, "_outer_site.pth").write_text("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in outer) + "\n")
    res = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"installing the wheel failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    work = base / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SLMRAG_INDEX_DIR", "SLMRAG_PACKS_DIR", "SLMRAG_PACKS_PATH", "VIRTUAL_ENV")}
    env.update(XDG_DATA_HOME=str(base / "xdg"), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return {"venv": venv, "py": py, "slmrag": venv / "bin" / "slmrag", "site": Path(site_dir), "cwd": work,
            "env": env, "data": base / "xdg" / "slmrag"}


def _run(inst: dict, args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=inst["cwd"], env={**inst["env"], **env}, capture_output=True, text=True, timeout=120)


def test_installed_wheel_lists_its_packs_and_keeps_data_in_the_user_folder(installed):
    res = _run(installed, [str(installed["slmrag"]), "packs", "list", "--json"])
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    for pack in BUILTIN_PACKS:
        assert rows[pack]["valid"], rows[pack]
        assert Path(rows[pack]["path"]) == installed["site"] / "app" / "domains" / pack

    code = ("import json, app; from app.env import checkout_root; from app.packs import index_root, packs_dir; "
            "print(json.dumps([app.__file__, str(checkout_root()), str(index_root()), str(packs_dir())]))")
    res = _run(installed, [str(installed["py"]), "-c", code])
    assert res.returncode == 0, res.stderr
    module, root, indexes, packs = json.loads(res.stdout)
    assert Path(module) == installed["site"] / "app" / "__init__.py"
    assert root == "None"
    assert Path(indexes) == installed["data"] / "indexes" and Path(packs) == installed["data"] / "packs"

    res = _run(installed, [str(installed["py"]), "-c", code], SLMRAG_INDEX_DIR=str(installed["cwd"] / "idx"))
    assert Path(json.loads(res.stdout)[2]) == installed["cwd"] / "idx"


def test_installed_wheel_ingests_its_starter_corpus_into_the_user_folder(installed):
    """What the UI does on first use: the packaged corpus, parsed in the sandboxed parser process."""
    corpus = installed["site"] / "app" / "domains" / "medical" / "corpus"
    res = _run(installed, [str(installed["slmrag"]), "ingest", str(corpus), "--pack", "medical", "--json"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert len(summary["added"]) == len(list(corpus.iterdir())) and not summary["failed"] and summary["chunks"] > 0
    res = _run(installed, [str(installed["slmrag"]), "status", "--pack", "medical", "--check", "--json"])
    status = json.loads(res.stdout)
    assert Path(status["index_dir"]) == installed["data"] / "indexes" / "medical"
    assert status["consistent"] and status["documents"] == len(summary["added"])


def test_installed_wheel_refuses_to_change_a_builtin_pack(installed):
    questions = installed["cwd"] / "q.jsonl"
    questions.write_text('{"id": "q1", "question": "What is the INR target?"}\n')
    res = _run(installed, [str(installed["slmrag"]), "filter", "calibrate", "--pack", "medical",
                           "--questions", str(questions), "--write"])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "built-in pack of the installed slmrag" in res.stderr
    assert "slmrag packs new my-medical --from medical" in " ".join(res.stderr.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_installed_wheel_serves_the_ui(installed):
    port = _free_port()
    log = installed["cwd"] / "ui.log"
    with log.open("wb") as out:
        # Its own session: `slmrag ui` runs Streamlit as a child, and both must be stopped.
        proc = subprocess.Popen([str(installed["slmrag"]), "ui", "--port", str(port), "--headless"],
                                cwd=installed["cwd"], env=installed["env"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    healthy = r.status == 200 and r.read() == b"ok"
            except OSError:
                pass
            if healthy:
                break
            time.sleep(0.3)
        assert healthy, f"slmrag ui (exit {proc.poll()}) did not serve within 90 s:\n{log.read_text()[-3000:]}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
