"""End-to-end tests: a real Chromium drives `streamlit run dashboard.py`.

Run with ``pytest -m browser``. Needs Debian's Chromium at /usr/bin/chromium
(``playwright install`` is not used). Without it these tests skip, unless
``REQUIRE_BROWSER=1`` is set (as in CI), where a missing browser fails.

Full-page screenshots of every page land in ``artifacts/screenshots/`` (ignored by git: a test run never
writes a tracked file; the README's screenshots come from ``docs/make_screenshots.py``) and the server's
log in ``artifacts/browser-server.log``.

One server and one Chromium serve the whole file; each test gets a fresh
browser context (no cookies, no session state). The first test asks the fresh
server for a page URL before anything else (see ``pages/ui/navigation.py``); it
starts a server of its own when the shared one has already served a page (for
example under ``-k``). Every other test gets the server once a page has run on it
(torch imported, the model loaded), so its own waits do not pay for the cold start.

Waits are on the app's own state (the script has finished, nothing is stale),
never fixed sleeps. Their timeouts are generous, for a 2-core machine that is
busy with something else, and each is bounded on its own: slowness alone never
fails a test, and a wedged server still ends every wait (tests/app/test_waits.py).
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

from saliency_core.methods.registry import map_title, shown_by_default

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def app_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a dashboard server shared by this module, uploads kept in a tmp folder."""
    upload_dir = tmp_path_factory.mktemp("uploads")
    results_dir = tmp_path_factory.mktemp("results")
    images = tmp_path_factory.mktemp("dataset") / "images"

    def batch_results() -> None:  # for the Dataset page, made while the server starts (it reads them lazily)
        from saliency_core.jobs.batch import main as batch_job
        from saliency_core.jobs.imagefolder import write_sample_folder

        write_sample_folder(images, 12)
        assert batch_job(["--images", str(images), "--out", str(results_dir / "samples"), "--no-progress"]) == 0

    with _streamlit(request, upload_dir, SERVER_LOG, results_dir, while_starting=batch_results) as url:
        UPLOAD_DIRS[url] = upload_dir
        yield url


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


@pytest.fixture
def session_on(browser):
    """Factory: ``session_on(base_url)`` is a new Session (a fresh browser context); closed after the test."""
    sessions: list[Session] = []

    def make(base_url: str) -> Session:
        s = Session(browser, base_url)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()


@pytest.fixture(scope="module")
def warm_url(browser, app_url: str) -> str:
    """``app_url`` once a page has run there: torch imported, the model loaded, the sample's maps cached.

    After the first test this costs nothing (it opened a page); under ``-k`` it opens the home page.
    """
    if app_url not in _SERVED:
        s = Session(browser, app_url)
        try:
            s.goto("/")
            wait_idle(s.page, COLD_WAIT_MS)
            wait_for_counts(s.page, PAGES[0][2], COLD_WAIT_MS)
        finally:
            s.close()
    return app_url


@pytest.fixture
def new_session(session_on, warm_url):
    """Factory: ``new_session()`` is a new Session on the shared, warmed-up server."""
    return lambda: session_on(warm_url)


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


# --------------------------------------------------------------------------- tests


def test_first_request_to_a_page_url_renders_the_page(request, app_url, session_on, tmp_path):
    """A fresh server whose very first visitor opens /compare (not /) shows the Compare page."""
    with contextlib.ExitStack() as stack:
        base = app_url
        if app_url in _SERVED:  # not fresh any more (test selection or order changed): use a server of our own
            base = stack.enter_context(_streamlit(request, tmp_path / "uploads", tmp_path / "server.log"))
        s = session_on(base)
        s.goto("/compare")
        wait_idle(s.page, COLD_WAIT_MS)
        wait_for_counts(s.page, {PLOT: 4, DATAFRAME: 1}, COLD_WAIT_MS)
        wait_idle(s.page, COLD_WAIT_MS)
        assert s.page.locator("h1").first.inner_text() == "Score gradient vs loss gradient"
        assert urlsplit(s.page.url).path == "/compare"
        assert s.page.locator(f'{SIDEBAR} [data-testid="stSidebarNavLink"]').count() == len(PAGES)
        assert_healthy(s, "first request to /compare")
        screenshot(s.page, "00-cold-start-compare")


@pytest.mark.parametrize(("path", "title", "expected", "timeout"), PAGES,
                         ids=[p[0].strip("/") or "home" for p in PAGES])
def test_every_page_renders(new_session, path, title, expected, timeout):
    s = new_session()
    log_start = SERVER_LOG.stat().st_size
    s.goto(path)
    wait_idle(s.page, timeout)
    wait_for_counts(s.page, expected, timeout)
    wait_idle(s.page, timeout)
    assert s.page.locator("h1").first.inner_text() == title
    assert_healthy(s, path)
    assert not server_log_tracebacks(log_start), server_log_tracebacks(log_start)
    screenshot(s.page, f"page-{path.strip('/') or 'home'}")


def test_upload_on_saliency_page(new_session):
    s = opened(new_session, "/saliency", {HEATMAP: 1, DATAFRAME: 1})
    page = s.page
    sample_z = heatmap_checksum(page)

    data = png_bytes(photos()["astronaut.png"])
    upload(page, "astronaut.png", data)
    wait_for_caption(page, "astronaut.png")
    wait_idle(page)
    wait_for_counts(page, {HEATMAP: 1, DATAFRAME: 1})
    assert_healthy(s, "after uploading astronaut.png")

    top5 = page.locator(f'{MAIN} {DATAFRAME}').first
    assert top5.locator('[role="row"]').count() == 6  # header + 5 predictions
    assert heatmap_checksum(page) != sample_z, "the heatmap still shows the sample photo"
    assert query(page).get("image") == [hashlib.sha256(data).hexdigest()]
    assert page.locator(f'{SIDEBAR} [data-testid="stImage"]').count() == 1
    screenshot(page, "saliency-uploaded-astronaut")

    # A corrupt file: a readable error, no exception, no traceback.
    upload(page, "broken.png", np.random.default_rng(0).bytes(4096))
    error = page.locator('[data-testid="stAlertContentError"]').first
    error.wait_for(state="visible", timeout=WAIT_MS)
    wait_idle(page)
    text = error.inner_text()
    assert "broken.png" in text and "not a recognised image" in text, text
    assert page.locator(HEATMAP).count() == 0
    assert_healthy(s, "after uploading broken.png")
    screenshot(page, "saliency-uploaded-broken-file")


def test_four_sessions_at_once_each_see_their_own_map(new_session):
    images = {name: png_bytes(a) for name, a in photos().items()}
    sessions = {name: new_session() for name in images}
    for s in sessions.values():
        s.goto("/saliency")
    for s in sessions.values():
        wait_idle(s.page)
        s.page.locator(UPLOAD_INPUT).wait_for(state="attached")

    for name, s in sessions.items():  # start all four uploads before waiting on any
        upload(s.page, name, images[name])

    checksums = {}
    for name, s in sessions.items():
        wait_for_caption(s.page, name)
        wait_idle(s.page)
        wait_for_counts(s.page, {HEATMAP: 1, DATAFRAME: 1})
        assert_healthy(s, f"session with {name}")
        captions = [t for t in main_markdown(s.page) if " · " in t]
        assert captions and captions[0].startswith(f"{name} · "), captions
        for other in images:
            if other != name:
                assert not any(other in t for t in main_markdown(s.page)), f"{other} leaked into {name}'s session"
        assert query(s.page).get("image") == [hashlib.sha256(images[name]).hexdigest()], s.page.url
        checksums[name] = heatmap_checksum(s.page)
        screenshot(s.page, f"concurrent-{Path(name).stem}")
    assert len(set(checksums.values())) == len(images), f"sessions share a heatmap: {checksums}"


def test_shared_link_opens_the_same_image_and_map(new_session, app_url):
    rng = np.random.default_rng(7)
    art = np.full((240, 320, 3), (30, 110, 200), np.uint8)  # a blue field with a few coloured shapes
    art[40:140, 30:130] = (240, 200, 20)
    yy, xx = np.mgrid[:240, :320]
    art[(yy - 150) ** 2 + (xx - 220) ** 2 < 60**2] = (200, 30, 40)
    art = np.clip(art.astype(int) + rng.integers(-12, 12, art.shape), 0, 255).astype(np.uint8)
    data = png_bytes(art)
    sha = hashlib.sha256(data).hexdigest()

    owner = new_session()
    owner.goto("/saliency")
    wait_idle(owner.page)
    owner.page.locator(UPLOAD_INPUT).wait_for(state="attached")
    upload(owner.page, "shapes.png", data)
    wait_for_caption(owner.page, "shapes.png")
    wait_idle(owner.page)
    wait_for_counts(owner.page, {HEATMAP: 1})
    link = owner.page.url
    assert query(owner.page).get("image") == [sha], link
    assert (UPLOAD_DIRS[app_url] / sha).is_file(), "the upload is not in SALIENCY_UPLOAD_DIR"
    owner_z = heatmap_checksum(owner.page)

    guest = new_session()  # a new browser context: no cookies, no session state
    guest.page.goto(link)
    wait_for_caption(guest.page, "shapes.png")
    wait_idle(guest.page)
    wait_for_counts(guest.page, {HEATMAP: 1, DATAFRAME: 1})
    assert_healthy(guest, "shared link")
    assert query(guest.page).get("image") == [sha], guest.page.url
    assert heatmap_checksum(guest.page) == owner_z
    caption = guest.page.locator(f'{SIDEBAR} [data-testid="stImage"]').first.inner_text()
    assert "from a shared link" in caption, caption
    screenshot(guest.page, "saliency-shared-link")


# --------------------------------------------------------------------------- known app bugs


def _store_image(app_url: str, name: str, array: np.ndarray) -> str:
    """Put an image into the server's upload folder, as an earlier upload would have; returns its sha256."""
    from saliency_core.inputs.upload_store import UploadStore

    data = png_bytes(array)
    sha = hashlib.sha256(data).hexdigest()
    assert UploadStore(UPLOAD_DIRS[app_url]).put(sha, data, {"name": name})
    return sha


def test_link_with_image_and_source_upload_opens_the_image(new_session, app_url):
    sha = _store_image(app_url, "linked.png", photos()["rocket.png"])
    s = new_session()
    s.goto(f"/saliency?image={sha}&source=upload")
    wait_idle(s.page)
    wait_for_counts(s.page, {HEATMAP: 1})
    wait_idle(s.page)
    assert_healthy(s, "hand-written link")
    captions = [t for t in main_markdown(s.page) if " · " in t]
    assert captions and captions[0].startswith("linked.png · "), captions
    assert query(s.page).get("image") == [sha], s.page.url


def test_failed_upload_clears_the_image_link(new_session):
    s = new_session()
    s.goto("/saliency")
    wait_idle(s.page)
    s.page.locator(UPLOAD_INPUT).wait_for(state="attached")
    upload(s.page, "camera.png", png_bytes(photos()["camera.png"]))
    wait_for_caption(s.page, "camera.png")
    wait_idle(s.page)
    assert "image" in query(s.page)
    upload(s.page, "broken.png", np.random.default_rng(1).bytes(4096))
    s.page.locator('[data-testid="stAlertContentError"]').first.wait_for(state="visible")
    wait_idle(s.page)
    assert "image" not in query(s.page), s.page.url


def test_dataset_image_opens_in_compare(new_session):
    """The Dataset page's "Open in Compare" makes that file the current image on the Compare page."""
    s = opened(new_session, "/dataset", {PLOT: 2, DATAFRAME: 2})
    page = s.page
    first = page.locator(".st-key-open_worst_0").get_by_role("button", name="Open in Compare")
    first.scroll_into_view_if_needed()
    first.click()
    page.wait_for_url("**/compare**")
    wait_idle(page)
    wait_for_counts(page, {PLOT: 4, DATAFRAME: 1})
    wait_idle(page)
    assert page.locator("h1").first.inner_text() == "Score gradient vs loss gradient"
    captions = [t for t in main_markdown(page) if ".jpg · " in t]
    assert captions and "(true label)" in captions[0], main_markdown(page)
    assert "image" in query(page) and query(page)["source"] == ["upload"]
    assert_healthy(s, "dataset -> compare")
    screenshot(page, "dataset-opened-in-compare")


# --------------------------------------------------------------------------- the Methods page

GRID = ".st-key-grid .js-plotly-plot"
AGREEMENT = ".st-key-agreement .js-plotly-plot"


def grid_checksum(page) -> str:
    """The names and z data of every heatmap Plotly holds in the grid, as one string."""
    return page.evaluate(
        """sel => { const gd = document.querySelector(sel);
                    return gd.data.map(t => t.name + '=' + (t.z.bdata ? t.z.dtype + ':' + t.z.bdata
                                                                      : JSON.stringify(t.z))).join('|'); }""",
        GRID)


def open_methods(new_session, path: str, counts: dict[str, int]):
    s = new_session()
    s.goto(path)
    wait_idle(s.page, FAITHFULNESS_WAIT_MS)
    wait_for_counts(s.page, counts, FAITHFULNESS_WAIT_MS)
    wait_idle(s.page, FAITHFULNESS_WAIT_MS)
    return s


def test_methods_page_renders_every_chart(new_session):
    """The fast methods' grid, the agreement matrix, the parameters table and the ranking with its downloads."""
    s = open_methods(new_session, "/methods?rank=1", {GRID: 1, AGREEMENT: 1, DATAFRAME: 2})
    page = s.page
    assert page.locator("h1").first.inner_text() == "Which method should I believe?"
    assert page.locator(PLOT).count() == 2
    names = grid_checksum(page).split("|")
    # Every method that declares itself fast enough (one pass), score then loss, in registry order.
    assert [n.split("=", 1)[0] for n in names] == [
        map_title(m, o) for m in shown_by_default() for o in ("score", "loss")]
    assert page.get_by_role("button", name="Ranking (CSV)").count() == 1
    assert query(page).get("rank") == ["1"]
    assert_healthy(s, "/methods")
    screenshot(page, "methods")


def test_shared_link_with_smoothgrad_parameters_opens_the_same_view(new_session):
    owner = open_methods(new_session, "/methods?method=smoothgrad&samples=8&seed=3&methods=gradient,smoothgrad"
                                      "&scale=method", {GRID: 1, AGREEMENT: 1, DATAFRAME: 1})
    link = owner.page.url
    params = query(owner.page)
    assert params["samples"] == ["8"] and params["seed"] == ["3"] and params["methods"] == ["gradient,smoothgrad"]
    assert params["scale"] == ["method"]
    owner_grid = grid_checksum(owner.page)
    assert "SmoothGrad · score" in owner_grid

    guest = new_session()  # a fresh browser context: no cookies, no session state
    guest.page.goto(link)
    wait_idle(guest.page, FAITHFULNESS_WAIT_MS)
    wait_for_counts(guest.page, {GRID: 1, AGREEMENT: 1, DATAFRAME: 1}, FAITHFULNESS_WAIT_MS)
    wait_idle(guest.page, FAITHFULNESS_WAIT_MS)
    assert_healthy(guest, "shared Methods link")
    assert query(guest.page) == params
    assert grid_checksum(guest.page) == owner_grid
    screenshot(guest.page, "methods-shared-link")

    # Leaving the page drops its own parameters from the address bar; the sidebar's view stays.
    guest.page.locator('[data-testid="stSidebarNavLink"]', has_text="Compare").first.click()
    guest.page.wait_for_url("**/compare**")
    wait_idle(guest.page, FAITHFULNESS_WAIT_MS)
    after = query(guest.page)
    assert "methods" not in after and "scale" not in after and after.get("samples") == ["8"], after


# --------------------------------------------------------------------------- a map with nothing in it


def test_a_zero_map_is_drawn_empty_in_the_browser_and_said_so(new_session):
    """Grad-CAM's −L map of class 0 on Coffee is zero everywhere: Chromium drew it solid orange under a
    −0.4…0.4 colour bar. Now its colour range puts it at the bottom of the scale (black on "hot")."""
    s = opened(new_session, "/compare?method=grad_cam&target=0", {PLOT: 2})
    ranges = s.page.evaluate(
        """() => document.querySelector('.st-key-side_by_side .js-plotly-plot').data
                 .map(t => [t.name, t.zmin, t.zmax])""")
    assert dict((n, (lo, hi)) for n, lo, hi in ranges)["loss"] == (0, 1), ranges
    s.page.get_by_text("Grad-CAM · loss −L is zero everywhere, so it is drawn empty").first.wait_for(timeout=WAIT_MS)
    s.page.get_by_text("undefined: Grad-CAM · loss −L is zero everywhere").first.wait_for(state="attached",
                                                                               timeout=WAIT_MS)  # a canvas table
    assert_healthy(s, "a zero map")
    screenshot(s.page, "compare-zero-map")


# --------------------------------------------------------------------------- display choices in the link


def test_a_shared_link_shows_the_senders_colour_map_and_overlay(new_session):
    """On Saliency the sender chooses viridis and "Overlay on the image"; the link opened in a fresh browser
    showed hot and Heatmap. Now it shows what the sender sees (tests/app/test_view_links.py: every page)."""
    owner = opened(new_session, "/saliency", {HEATMAP: 1})
    page = owner.page
    page.locator(f'{MAIN} .st-key-colorscale button[aria-label="Open"]').click()
    page.get_by_role("option", name="viridis", exact=True).click()
    wait_idle(page)
    page.locator(f"{MAIN} .st-key-saliency_view").get_by_text("Overlay on the image").click()
    wait_idle(page)
    page.wait_for_function("""() => { const gd = document.querySelector('.st-key-heatmap .js-plotly-plot');
                                      return gd && gd.data && gd.data.some(t => t.type === 'image'); }""",
                           timeout=WAIT_MS)
    # The link is rewritten when the run ends, which on a busy machine can be after the plot is drawn.
    page.wait_for_function("() => new URLSearchParams(location.search).get('view') === 'overlay'", timeout=WAIT_MS)
    link = page.url
    assert query(page).get("colorscale") == ["viridis"] and query(page).get("view") == ["overlay"], link

    guest = new_session()  # a colleague: no cookies, no session state
    guest.page.goto(link)
    wait_idle(guest.page)
    wait_for_counts(guest.page, {HEATMAP: 1})
    wait_idle(guest.page)
    drawn = guest.page.evaluate(
        """() => document.querySelector('.st-key-heatmap .js-plotly-plot').data
                 .map(t => [t.type, t.colorscale ? JSON.stringify(t.colorscale).slice(0, 80) : null])""")
    kinds = [kind for kind, _ in drawn]
    assert "image" in kinds, drawn  # the overlay, not the plain heatmap
    scale = next(s for kind, s in drawn if kind == "heatmap")
    assert "#440154" in scale.lower() or "68,1,84" in scale, scale  # viridis starts dark purple, hot starts black
    assert_healthy(guest, "the shared link")
    screenshot(guest.page, "saliency-shared-display-choices")
