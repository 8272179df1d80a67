"""End-to-end test of the chat UI in a real browser: Debian's Chromium driven by Playwright.

Starts `streamlit run streamlit_app.py` on a free loopback port with a temporary index root, asks the
medical starter pack a question, waits for the streamed answer and its sources, checks the citation
anchors, switches to the legal pack and back (chat history is kept per pack) and saves screenshots to
tests/artifacts/. Prints the time from page load to the first streamed token.

Chromium comes from apt (`.ci/install_browser.sh`); Playwright never downloads a browser.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-quic", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
QUESTION = "What is the target INR range for warfarin therapy?"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing: run .ci/install_browser.sh "
                       "(apt-get install chromium chromium-driver) to enable the real-browser UI test"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, prebuilt_indexes):
    root = tmp_path_factory.mktemp("browser-indexes")
    shutil.copytree(prebuilt_indexes, root, dirs_exist_ok=True)
    port = free_port()
    log = tmp_path_factory.mktemp("browser-log") / "streamlit.log"
    env = dict(os.environ, SLMRAG_INDEX_DIR=str(root), PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1",
               SLMRAG_DEFAULT_PACK="medical", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    # Chromium renders the page on the same CPUs as the server. On a 2-core machine llama.cpp with one
    # thread per core then fights the browser for every core and slows down several-fold, so the server
    # gets cores-1 inference threads unless SLMRAG_THREADS is set.
    if "SLMRAG_THREADS" not in env and (os.cpu_count() or 1) <= 2:
        env["SLMRAG_THREADS"] = "1"
    cmd = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        yield {"url": f"http://127.0.0.1:{port}/", "log": log, "root": root,
               "threads": env.get("SLMRAG_THREADS", str(os.cpu_count()))}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# The assistant's reply is the last chat message; its text, ignoring the "Searching…" spinner.
_ANSWER_TEXT_JS = """() => {
  const msgs = document.querySelectorAll('[data-testid="stChatMessage"]');
  if (msgs.length < 2) return '';
  const last = msgs[msgs.length - 1];
  let text = '';
  for (const md of last.querySelectorAll('[data-testid="stMarkdownContainer"]')) {
    if (md.closest('[data-testid="stSpinner"]')) continue;
    text += md.innerText;
  }
  return text.trim();
}"""


def _run_finished(payload) -> bool:
    """Whether a websocket frame from the server says that a script run finished (and was not cut short
    by a newer run)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    if not isinstance(payload, bytes):
        return False
    msg = ForwardMsg.FromString(payload)
    return msg.WhichOneof("type") == "script_finished" and msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY


class ScriptRuns:
    """The app's script runs, counted from the server's messages on the page's websocket, so that the test
    waits for the run an action starts to finish instead of sleeping and hoping it has. Every action that
    starts a run goes through :meth:`next`, so no run is ever in flight when the next one is awaited."""

    def __init__(self, page, timeout_ms: int):
        self.page, self.timeout_ms = page, timeout_ms
        self.ws = None
        self.finished = 0
        page.on("websocket", self._attach)

    def _attach(self, ws) -> None:
        self.ws = ws
        ws.on("framereceived", self._count)

    def _count(self, payload) -> None:
        self.finished += _run_finished(payload)

    @contextlib.contextmanager
    def next(self):
        """Wait, after the block, until the script run that the block started has finished."""
        before = self.finished
        yield
        # (The sync API delivers events only inside Playwright calls, so none is missed between checks.)
        if self.ws is None:
            self.page.wait_for_event("websocket", timeout=self.timeout_ms)
        while self.finished == before:
            self.ws.wait_for_event("framereceived", predicate=_run_finished, timeout=self.timeout_ms)


def set_slider(page, runs: ScriptRuns, label: str, keys: list[str], shown: str) -> None:
    """Move a sidebar slider with the keyboard. Each key must change the value: a change runs the script,
    and the next key waits for that run to finish."""
    from playwright.sync_api import expect

    slider = page.locator('[data-testid="stSidebar"] [data-testid="stSlider"]').filter(has_text=label)
    thumb = slider.get_by_role("slider")
    thumb.focus()
    for key in keys:
        with runs.next():
            thumb.press(key)
    expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text(shown)


def screenshot(page, name: str) -> None:
    """Save a screenshot once the 'Running…' status is gone (callers wait for their run first)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_chat_in_real_browser(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=240_000)  # shared CPUs: model loads and generation can be slow
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            page.set_default_timeout(240_000)
            runs = ScriptRuns(page, timeout_ms=300_000)
            t_load = time.perf_counter()
            with runs.next():
                page.goto(server["url"], wait_until="domcontentloaded")
            # The page is ready when the pack's models are loaded and the chat input is shown.
            expect(page.get_by_role("heading", name="Clinical Literature Assistant")).to_be_visible()
            chat = page.get_by_test_id("stChatInputTextArea")
            expect(chat).to_be_visible()
            t_ready = time.perf_counter()

            # Keep the answer short on shared CPUs: k=2 passages, 16 tokens (per-session settings panel).
            page.locator('[data-testid="stSidebar"] [data-testid="stExpander"] summary').filter(
                has_text="Settings").click()
            set_slider(page, runs, "Passages retrieved", ["Home", "ArrowRight"], "2")  # pack default 5 -> 1 -> 2
            set_slider(page, runs, "Answer length", ["Home"], "16")  # pack default 200 -> 16

            chat.fill(QUESTION)
            t_ask = time.perf_counter()
            with runs.next():
                chat.press("Enter")
                page.wait_for_function(f"() => ({_ANSWER_TEXT_JS})().length > 0", polling=50, timeout=240_000)
                t_first = time.perf_counter()
            t_done = time.perf_counter()

            answer = page.get_by_test_id("stChatMessage").nth(1)
            # The answer is complete: its sources are rendered under it.
            expect(answer.locator(".slm-src").first).to_be_visible()
            text = page.evaluate(_ANSWER_TEXT_JS)
            assert "sources" in text.lower() and "anticoagulation_warfarin" in text, text[:500]
            expect(answer.get_by_text("Noise filter:")).to_be_visible()
            expect(answer.locator(".slm-disclaimer, [data-testid='stCaptionContainer']").filter(
                has_text="first token")).to_be_visible()
            assert not page.get_by_test_id("stException").count(), "a traceback was shown in the page"
            # Citation markers link to their source card (same-page anchors). Generation is greedy, so
            # this short answer is always the same, and it cites a source.
            cards = answer.locator(".slm-src")
            anchor = cards.first.get_attribute("id")
            assert anchor and anchor.startswith("src-medical-")
            links = answer.locator('a[href^="#src-medical-"]')
            expect(links.first).to_be_visible()
            target = links.first.get_attribute("href")
            links.first.click()
            page.wait_for_function(f"() => location.hash === {target!r}")
            expect(answer.locator(f"[id='{target[1:]}']")).to_have_class(re.compile(r"\bslm-src\b"))
            # The source viewer shows the passage highlighted in its document.
            answer.locator('[data-testid="stExpander"] summary').filter(has_text="in context").first.click()
            expect(answer.locator("mark.slm-hl").first).to_be_visible()
            # The noise filter lists every retrieved passage with its score and fate.
            answer.locator('[data-testid="stExpander"] summary').filter(has_text="Noise filter").click()
            expect(answer.locator("table.slm-filter tr")).to_have_count(3)  # header + k=2 passages
            screenshot(page, "browser-answer.png")

            # Switch pack: a different title and an empty chat of its own.
            page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
            with runs.next():
                page.get_by_role("option", name="Contract Review Assistant").click()
            expect(page.get_by_role("heading", name="Contract Review Assistant")).to_be_visible()
            expect(page.get_by_test_id("stChatInputTextArea")).to_be_visible()
            expect(page.get_by_test_id("stChatMessage")).to_have_count(0)
            expect(page.get_by_role("button", name="Export")).to_be_disabled()  # no conversation in this pack
            screenshot(page, "browser-legal.png")

            # And back: the medical conversation is still there.
            page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
            with runs.next():
                page.get_by_role("option", name="Clinical Literature Assistant").click()
            expect(page.get_by_role("heading", name="Clinical Literature Assistant")).to_be_visible()
            expect(page.get_by_test_id("stChatMessage")).to_have_count(2)
            expect(page.locator(".slm-src").first).to_be_visible()
            expect(page.get_by_role("button", name="Export")).to_be_enabled()
            screenshot(page, "browser.png")
        finally:
            browser.close()

    first_token = t_first - t_load
    print(f"\n[browser] page load -> app ready {t_ready - t_load:.1f}s; question -> first streamed token "
          f"{t_first - t_ask:.1f}s; page load -> first streamed token {first_token:.1f}s; "
          f"answer complete {t_done - t_load:.1f}s (server inference threads: {server['threads']}); screenshot {ARTIFACTS / 'browser.png'}")
    assert (ARTIFACTS / "browser.png").stat().st_size > 10_000
