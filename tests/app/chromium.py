"""What the Chromium tests share: one place for the server, the browser session and the waits.

``_streamlit``/``serve`` start ``streamlit run dashboard.py`` on 127.0.0.1 (a free port, its log kept);
:class:`Session` is one fresh browser context; ``wait_idle``, ``wait_for_counts`` and ``opened`` wait on the
app's own state (the script has finished, nothing is stale), never fixed sleeps, each bounded on its own and
generously, for a busy 2-core machine; ``assert_healthy`` and ``screenshot`` are what every test ends with.
The fixtures built on these (``browser``, ``app_url``, ``warm_url``, ``session_on``, ``new_session``) are
tests/app/conftest.py's, so a test module only asks for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
SERVER_LOG = REPO / "artifacts" / "browser-server.log"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1500, "height": 1000}
STARTUP_TIMEOUT_S = 120  # until the server answers its health check
# How long one page run (or one upload) may take. Idle, each takes 1-15 s on 2 cores; a busy machine
# (another process on both cores) makes that three to four times longer.
WAIT_MS = 120_000
COLD_WAIT_MS = 240_000  # the first page on a new server also imports torch and loads the model
FAITHFULNESS_WAIT_MS = 240_000  # deletion/insertion curves and the randomisation check: the slowest page

IDLE_APP = '[data-testid="stApp"][data-test-script-state="notRunning"]'
RUNNING = '[data-testid="stStatusWidget"], [data-stale="true"]'  # the running indicator, stale elements
MAIN = '[data-testid="stMain"]'
SIDEBAR = '[data-testid="stSidebar"]'
PLOT = ".js-plotly-plot"
DATAFRAME = '[data-testid="stDataFrame"]'
TABLE = '[data-testid="stTable"]'
EXCEPTION = '[data-testid="stException"]'
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
HEATMAP = ".st-key-heatmap .js-plotly-plot"

# Path, title (h1), what must be on screen once the page has run for the default sample photo,
# and how long that may take.
PAGES = [
    ("/", "Which pixels drive the classifier's decision?", {'[data-testid="stMetric"]': 3}, WAIT_MS),
    ("/saliency", "Saliency map", {PLOT: 1, DATAFRAME: 1}, WAIT_MS),
    ("/compare", "Score gradient vs loss gradient", {PLOT: 4, DATAFRAME: 1}, WAIT_MS),
    ("/methods", "Which method should I believe?", {PLOT: 2, DATAFRAME: 1}, WAIT_MS),
    ("/gallery", "Gallery", {PLOT: 1}, WAIT_MS),
    ("/statistics", "Per-pixel statistics", {PLOT: 2, DATAFRAME: 3}, WAIT_MS),
    ("/faithfulness", "Which map tells the truth?", {PLOT: 4, DATAFRAME: 1}, FAITHFULNESS_WAIT_MS),
    ("/dataset", "Dataset results", {PLOT: 2, DATAFRAME: 2, TABLE: 1}, WAIT_MS),
]

_SERVED: set[str] = set()  # base URLs that have been asked for a page
UPLOAD_DIRS: dict[str, Path] = {}  # base URL -> its SALIENCY_UPLOAD_DIR
SERVERS: dict[str, subprocess.Popen] = {}  # base URL -> its server process (its CPU time, in /proc/<pid>/stat)
# These servers' tests are about pages, not the compute budget (tests/app/test_browser_budget.py tests that at
# its default): a light view's estimate grows with the machine's load, and must not become a confirm button here.
TEST_CONFIRM_ABOVE_S = "600"


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server and everything it started (it leads its own process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _print_log(request: pytest.FixtureRequest, log: Path, why: str) -> None:
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    ctx = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with ctx:
        sys.stderr.write(f"\n----- streamlit server log ({why}) -----\n{text[-20_000:]}\n----- end of log -----\n")


@contextlib.contextmanager
def _streamlit(request: pytest.FixtureRequest, upload_dir: Path, log: Path,
               results_dir: Path | None = None, while_starting: Callable[[], None] | None = None,
               env: dict[str, str] | None = None) -> Iterator[str]:
    """A dashboard server on a free port; yields its base URL.

    ``while_starting`` runs once the server process is launched, before waiting for it to answer; ``env``
    adds settings to its environment (the compute budget is :data:`TEST_CONFIRM_ABOVE_S` unless it sets
    ``SALIENCY_CONFIRM_ABOVE_S``). The process is in :data:`SERVERS` under the URL while it runs.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "SALIENCY_UPLOAD_DIR": str(upload_dir), "PYTHONUNBUFFERED": "1",
                "SALIENCY_RESULTS_DIR": str(results_dir or upload_dir / "no-results"),
                "SALIENCY_CONFIRM_ABOVE_S": TEST_CONFIRM_ABOVE_S, **(env or {})}
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with serve(request, cmd, log, url, lambda: _healthy(url), full_env, while_starting) as proc:
        SERVERS[url] = proc
        try:
            yield url
        finally:
            SERVERS.pop(url, None)


@contextlib.contextmanager
def serve(request: pytest.FixtureRequest, cmd: list[str], log: Path, url: str, ready: Callable[[], bool],
          env: dict[str, str] | None = None,
          while_starting: Callable[[], None] | None = None) -> Iterator[subprocess.Popen]:
    """``cmd`` in its own process group, its output in ``log``, until ``ready()``; stopped by PID after, and
    its log printed when a test failed. ``while_starting`` runs once the process is launched."""
    log.parent.mkdir(parents=True, exist_ok=True)
    failed_before = request.session.testsfailed
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env or dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        if while_starting is not None:
            while_starting()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {proc.returncode}" if proc.poll() is not None else "no answer"
                _print_log(request, log, why)
                pytest.fail(f"{cmd[2]} did not start at {url} within {STARTUP_TIMEOUT_S} s ({why})")
            time.sleep(0.25)
        yield proc
    finally:
        _stop(proc)
        if request.session.testsfailed > failed_before:
            _print_log(request, log, "a test failed")


# --------------------------------------------------------------------------- browser


def _no_browser(msg: str) -> None:
    """Skip, or fail where the browser tests must run (REQUIRE_BROWSER=1, as in CI)."""
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {msg}")
    pytest.skip(msg)


def launch_browser():
    """One Chromium for the whole test session (the ``browser`` fixture of tests/app/conftest.py, shared by
    every browser test module: a second Playwright in the same process breaks the first)."""
    if not CHROMIUM.exists():
        _no_browser(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -r requirements-dev.txt)")

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Session:
    """One browser context and page, with the page's JavaScript errors collected."""

    def __init__(self, browser, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.js_errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.js_errors.append(str(exc)))

    def goto(self, path: str) -> None:
        _SERVED.add(self.base_url)
        self.page.goto(self.base_url + path)

    def close(self) -> None:
        self.context.close()


# --------------------------------------------------------------------------- helpers


def wait_idle(page, timeout: float = WAIT_MS) -> None:
    """Wait until the script has finished running and nothing on screen is stale.

    ``timeout`` bounds the whole wait (one script run), not each of its steps.
    """
    end = time.monotonic() + timeout / 1000
    for condition in (IDLE_APP, None, IDLE_APP):
        left = max(1.0, (end - time.monotonic()) * 1000)
        if condition is None:
            page.wait_for_function(f"() => !document.querySelector({RUNNING!r})", timeout=left)
        else:
            page.wait_for_selector(condition, timeout=left)


def wait_for_counts(page, counts: dict[str, int], timeout: float = WAIT_MS) -> None:
    """Wait until each selector matches at least n visible elements."""
    for selector, n in counts.items():
        page.locator(selector).nth(n - 1).wait_for(state="visible", timeout=timeout)


def opened(new_session, path: str, counts: dict[str, int], timeout: float = WAIT_MS) -> Session:
    """A new session on ``path``, once the page has run and shows ``counts`` elements."""
    s = new_session()
    s.goto(path)
    wait_idle(s.page, timeout)
    wait_for_counts(s.page, counts, timeout)
    wait_idle(s.page, timeout)
    return s


def assert_healthy(session: Session, where: str) -> None:
    page = session.page
    shown = page.locator(EXCEPTION).all_inner_texts()
    assert not shown, f"{where}: exception shown: {shown}"
    assert page.get_by_text("Traceback").count() == 0, f"{where}: a traceback is on screen"
    assert not session.js_errors, f"{where}: JavaScript errors: {session.js_errors}"


def screenshot(page, name: str) -> Path:
    """A full-page PNG of the app. Streamlit scrolls inside its main area and sidebar, not the
    document, so the viewport is stretched to the taller of the two for the shot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height_js = """() => Math.max(window.innerHeight, ...['stMain', 'stSidebarContent'].map(id => {
        const e = document.querySelector(`[data-testid="${id}"]`); return e ? e.scrollHeight : 0; }))"""
    next_frames = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    try:
        height = 0
        for _ in range(3):  # a taller viewport can reflow; stop once the height holds
            new_height = min(int(page.evaluate(height_js)), 12_000)
            if new_height == height:
                break
            height = new_height
            page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
            page.evaluate(next_frames)
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(VIEWPORT)
    return path


def main_markdown(page) -> list[str]:
    return page.locator(f'{MAIN} [data-testid="stMarkdownContainer"]').all_inner_texts()


def heatmap_checksum(page, selector: str = HEATMAP) -> str:
    """sha256 of the z values Plotly holds for the first trace of the plot."""
    z = page.evaluate(
        """sel => { const gd = document.querySelector(sel); if (!gd || !gd.data) return null;
                    const z = gd.data[0].z;
                    return (z && z.bdata) ? z.dtype + ':' + z.bdata : JSON.stringify(z); }""",
        selector,
    )
    assert z, f"no Plotly data on {selector}"
    return hashlib.sha256(z.encode()).hexdigest()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def photos() -> dict[str, np.ndarray]:
    """Four different photos, each at most 300x300 to keep uploads quick."""
    from skimage import data

    def small(a: np.ndarray) -> np.ndarray:
        img = Image.fromarray(a).convert("RGB")
        img.thumbnail((300, 300))
        return np.asarray(img)

    return {
        "astronaut.png": small(data.astronaut()),
        "coffee-crop.png": small(data.coffee()[50:350, 100:500]),
        "rocket.png": small(data.rocket()),
        "camera.png": small(np.stack([data.camera()] * 3, axis=-1)),
    }


def upload(page, name: str, data: bytes) -> None:
    page.set_input_files(UPLOAD_INPUT, files=[{"name": name, "mimeType": "image/png", "buffer": data}])


def wait_for_caption(page, name: str, timeout: float = WAIT_MS) -> None:
    """Wait until the page's caption (the first line under the title) names ``name``."""
    page.wait_for_function(
        """name => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stMarkdownContainer"]')]
                   .some(e => e.innerText.startsWith(name + ' · '))""",
        arg=name,
        timeout=timeout,
    )


def query(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def server_log_tracebacks(start: int) -> list[str]:
    text = SERVER_LOG.read_text(errors="replace")[start:] if SERVER_LOG.exists() else ""
    return [line for line in text.splitlines() if "Traceback" in line]


