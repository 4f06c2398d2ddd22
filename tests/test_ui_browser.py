"""The web view in a real browser: Debian's Chromium, headless, driven by Playwright.

In CI (CI=true) a missing browser or Playwright fails these tests; elsewhere they are skipped
with one line. Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uiserver import UI_FLOWS, WFL, UiServer, wfl, wfl_env

from wfl import Client

CHROMIUM = os.environ.get("WFL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PIPELINE = str(UI_FLOWS / "pipeline.py")
# when each run's row first appeared, by the page's own clock (not Playwright's round trips)
SEEN_AT = """
window.seenAt = {};
new MutationObserver(() => {
  for (const tr of document.querySelectorAll("tr[data-id]")) {
    if (!(tr.dataset.id in window.seenAt)) window.seenAt[tr.dataset.id] = Date.now();
  }
}).observe(document.querySelector("main"), { childList: true, subtree: true });
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def worker(store: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([WFL, "worker", "--dir", str(store)], env=wfl_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def test_runs_appear_advance_and_cancel_live_in_two_browsers(
    browser: Any, store: Path, worker: Any, tmp_path: Path
) -> None:
    server = UiServer(store)
    try:
        one = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        two = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        for page in (one, two):
            page.goto(server.url)
            page.wait_for_selector("#live[data-state=live]")
            page.wait_for_selector("text=No runs yet.")
            page.evaluate("window.notReloaded = true")  # gone if the page ever reloads

        one.evaluate(SEEN_AT)
        # long enough (a minute) that it is still running whenever the test cancels it
        run_id = wfl("start", PIPELINE, "--arg", "batches=200", "--arg", "pause=0.3",
                     "--dir", store, cwd=store).strip()  # fmt: skip
        started = time.time()  # the page's clock is the same wall clock
        row = f'tr[data-id="{run_id}"]'
        one.wait_for_selector(row, timeout=5000)
        appeared = one.evaluate(f"window.seenAt['{run_id}']") / 1000 - started
        assert appeared < 1.0, f"the run appeared {appeared:.2f} s after `wfl start` returned"
        two.wait_for_selector(row, timeout=1000)
        assert one.evaluate("window.notReloaded") is True

        # its page, reached by the link: steps advance without a reload
        one.click(f"{row} td.id a")
        one.wait_for_url(f"**/runs/{run_id}")
        one.evaluate("window.notReloaded = true")
        done = ".lane[data-state=done]"
        one.wait_for_function(f"document.querySelectorAll('{done}').length >= 2", timeout=20000)
        before = one.locator(done).count()
        one.wait_for_function(
            f"document.querySelectorAll('{done}').length > {before}", timeout=20000
        )
        assert one.evaluate("window.notReloaded") is True
        assert one.locator(".why").inner_text().strip() != ""

        # the URL survives a refresh
        one.reload()
        one.wait_for_selector(f"text={run_id}")
        one.wait_for_selector(".lane")
        shot(one, tmp_path / "run.png")

        # cancel, behind a confirmation
        # (a click event on the visible button: Playwright's wait for two identical animation
        # frames can starve on a machine at load 20+, and the button is not what is tested)
        one.wait_for_selector("text=Cancel run…", state="visible").dispatch_event("click")
        dialog = one.locator("dialog[open]")
        assert "Cancel run" in dialog.inner_text()
        with one.expect_response(lambda r: r.url.endswith("/cancel")) as answer:
            dialog.locator("#dialog-yes").dispatch_event("click")
        assert answer.value.status == 200, answer.value.text()
        one.wait_for_selector(".run-head .badge.s-canceled", timeout=10000)
        assert Client(store).status(run_id).state == "canceled"
        # and the worker winds it up: the page says so when the end is recorded
        one.wait_for_selector(".why.s-canceled >> text=It was canceled at", timeout=10000)

        # the other browser saw it too, without a reload
        two.wait_for_selector(f'{row}[data-state="canceled"]', timeout=5000)
        assert two.evaluate("window.notReloaded") is True
        shot(two, tmp_path / "runs.png")
    finally:
        assert server.stop() == 0


def test_filters_and_pages_have_urls(browser: Any, store: Path) -> None:
    client = Client(store)
    ids = [client.start(PIPELINE, {"batches": 1}) for _ in range(3)]
    client.cancel(ids[1])
    server = UiServer(store)
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_selector(f'tr[data-id="{ids[0]}"]')
        page.click('.chip[data-state="canceled"]')
        page.wait_for_function("document.querySelectorAll('tbody tr[data-id]').length === 1")
        assert "state=canceled" in page.url
        page.reload()  # the filter is in the URL: it survives
        page.wait_for_selector(f'tr[data-id="{ids[1]}"]')
        assert page.locator("tbody tr[data-id]").count() == 1
        page.goto(server.base + f"/?q={ids[2][:8]}")
        page.wait_for_selector(f'tr[data-id="{ids[2]}"]')
        assert page.locator("tbody tr[data-id]").count() == 1
    finally:
        assert server.stop() == 0


def test_off_loopback_the_token_is_required_and_posts_need_the_guard(
    browser: Any, store: Path
) -> None:
    run_id = Client(store).start(PIPELINE)
    server = UiServer(store, host="127.0.0.2")
    try:
        page = browser.new_page()
        refused = page.goto(server.base + "/")
        assert refused is not None
        assert refused.status == 401
        assert "token" in page.inner_text("body")
        page.goto(server.url)  # with ?token=: the page and everything it loads work
        page.wait_for_selector(f'tr[data-id="{run_id}"]')
        page.wait_for_selector("#live[data-state=live]")
        status = page.evaluate(
            f"fetch('/api/runs/{run_id}/cancel', {{method: 'POST'}}).then(r => r.status)"
        )
        assert status == 403  # the page's own origin, but no X-Wfl-Csrf header
        # a form on another site posting to the server (the browser sends the cookie only
        # with SameSite=None, and the guard wants the header anyway)
        other = browser.new_page()
        other.set_content(
            f'<form method="post" action="{server.base}/api/runs/{run_id}/cancel">'
            '<button id="go">go</button></form>'
        )
        with other.expect_navigation():
            other.click("#go")
        assert "401" in other.inner_text("body") or "403" in other.inner_text("body")
        assert Client(store).status(run_id).state == "in_progress"
    finally:
        assert server.stop() == 0


def shot(page: Any, path: Path) -> None:
    """A screenshot of the viewport, checked not blank: it decodes to many distinct byte values.
    (Animations are stopped for it: a live page never holds still otherwise.)"""
    page.screenshot(path=str(path), animations="disabled")
    width, height, pixels = _png_pixels(path.read_bytes())
    assert width >= 800
    assert height >= 400
    assert len(set(pixels)) > 40, f"{path} looks blank"


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)
