"""End-to-end test of the chat UI in a real browser: Debian's Chromium driven by Playwright.

Starts `streamlit run streamlit_app.py` on a free loopback port with a temporary index root, asks the
medical starter pack a question, waits for the streamed answer and its sources, checks the citation
anchors, switches to the legal pack and back (chat history is kept per pack) and saves screenshots to
tests/artifacts/. Prints the time from page load to the first streamed token.

Chromium comes from apt (`.ci/install_browser.sh`); Playwright never downloads a browser.
"""

from __future__ import annotations

import os
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


def wait_idle(page) -> None:
    """Wait until the script run has finished (no 'Running…' status) and the page has settled."""
    from playwright.sync_api import expect

    page.wait_for_timeout(300)
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    page.wait_for_timeout(300)


def set_slider(page, label: str, presses_right: int) -> None:
    """Move a sidebar slider to its minimum (Home), then right by n steps, with the keyboard."""
    slider = page.locator('[data-testid="stSidebar"] [data-testid="stSlider"]').filter(has_text=label)
    thumb = slider.get_by_role("slider")
    thumb.focus()
    thumb.press("Home")
    for _ in range(presses_right):
        thumb.press("ArrowRight")
    page.wait_for_timeout(300)


def test_chat_in_real_browser(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=240_000)  # shared CPUs: model loads and generation can be slow
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            page.set_default_timeout(240_000)
            t_load = time.perf_counter()
            page.goto(server["url"], wait_until="domcontentloaded")
            # The page is ready when the pack's models are loaded and the chat input is shown.
            expect(page.get_by_role("heading", name="Clinical Literature Assistant")).to_be_visible()
            chat = page.get_by_test_id("stChatInputTextArea")
            expect(chat).to_be_visible()
            t_ready = time.perf_counter()

            # Keep the answer short on shared CPUs: k=2 passages, 16 tokens (per-session settings panel).
            page.locator('[data-testid="stSidebar"] [data-testid="stExpander"] summary').filter(
                has_text="Settings").click()
            set_slider(page, "Passages retrieved", 1)
            set_slider(page, "Answer length", 0)
            expect(page.locator('[data-testid="stSidebar"] [data-testid="stSlider"]').filter(
                has_text="Answer length")).to_contain_text("16")

            chat.fill(QUESTION)
            t_ask = time.perf_counter()
            chat.press("Enter")
            page.wait_for_function(f"() => ({_ANSWER_TEXT_JS})().length > 0", polling=50, timeout=240_000)
            t_first = time.perf_counter()

            answer = page.get_by_test_id("stChatMessage").nth(1)
            # The answer is complete when its sources are rendered under it.
            expect(answer.locator(".slm-src").first).to_be_visible(timeout=300_000)
            t_done = time.perf_counter()
            text = page.evaluate(_ANSWER_TEXT_JS)
            assert "sources" in text.lower() and "anticoagulation_warfarin" in text, text[:500]
            expect(answer.get_by_text("Noise filter:")).to_be_visible()
            expect(answer.locator(".slm-disclaimer, [data-testid='stCaptionContainer']").filter(
                has_text="first token")).to_be_visible()
            assert not page.get_by_test_id("stException").count(), "a traceback was shown in the page"
            # Citation markers link to their source card (same-page anchors).
            cards = answer.locator(".slm-src")
            anchor = cards.first.get_attribute("id")
            assert anchor and anchor.startswith("src-medical-")
            links = answer.locator('a[href^="#src-medical-"]')
            if links.count():
                links.first.click()
                page.wait_for_function("() => location.hash.startsWith('#src-medical-')")
            # The source viewer shows the passage highlighted in its document.
            answer.locator('[data-testid="stExpander"] summary').filter(has_text="in context").first.click()
            expect(answer.locator("mark.slm-hl").first).to_be_visible()
            # The noise filter lists every retrieved passage with its score and fate.
            answer.locator('[data-testid="stExpander"] summary').filter(has_text="Noise filter").click()
            expect(answer.locator("table.slm-filter tr")).to_have_count(3)  # header + k=2 passages
            wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "browser-answer.png"), full_page=True)

            # Switch pack: a different title and an empty chat of its own.
            page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="Contract Review Assistant").click()
            expect(page.get_by_role("heading", name="Contract Review Assistant")).to_be_visible()
            expect(page.get_by_test_id("stChatInputTextArea")).to_be_visible()
            expect(page.get_by_test_id("stChatMessage")).to_have_count(0)
            wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "browser-legal.png"), full_page=True)

            # And back: the medical conversation is still there.
            page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="Clinical Literature Assistant").click()
            expect(page.get_by_role("heading", name="Clinical Literature Assistant")).to_be_visible()
            expect(page.get_by_test_id("stChatMessage")).to_have_count(2)
            expect(page.locator(".slm-src").first).to_be_visible()
            expect(page.get_by_role("button", name="Export")).to_be_enabled()  # the last element of a run
            wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)
        finally:
            browser.close()

    first_token = t_first - t_load
    print(f"\n[browser] page load -> app ready {t_ready - t_load:.1f}s; question -> first streamed token "
          f"{t_first - t_ask:.1f}s; page load -> first streamed token {first_token:.1f}s; "
          f"answer complete {t_done - t_load:.1f}s (server inference threads: {server['threads']}); screenshot {ARTIFACTS / 'browser.png'}")
    assert (ARTIFACTS / "browser.png").stat().st_size > 10_000
