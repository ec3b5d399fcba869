"""Fixtures for the dashboard's tests: the in-process AppTest pages and the Chromium ones.

The dashboard runs inside the pytest process, so everything Streamlit caches
(the model, analyses, the upload store) is shared between tests. The
fixtures here point the upload store at a temporary folder and pin the
dashboard to the CPU, so its maps can be compared with maps computed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.app.chromium import (
    _SERVED,
    COLD_WAIT_MS,
    PAGES,
    SERVER_LOG,
    UPLOAD_DIRS,
    Session,
    _streamlit,
    launch_browser,
    wait_for_counts,
    wait_idle,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboard.py"
TIMEOUT_S = 120  # the first run of a session imports torch and loads the model


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty upload store for the module's tests, and the dashboard on the CPU.

    ``caches.upload_store()`` is a ``st.cache_resource``: it is cleared here so
    the store is built from these variables, not from whatever ran before.
    """
    root = tmp_path_factory.mktemp("uploads")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SALIENCY_UPLOAD_DIR", str(root))
        mp.setenv("SALIENCY_DEVICE", "cpu")  # the reference maps in the tests are computed on the CPU
        mp.delenv("SALIENCY_UPLOAD_STORE", raising=False)
        mp.delenv("SALIENCY_UPLOAD_RETENTION_DAYS", raising=False)
        mp.delenv("SALIENCY_UPLOAD_MAX_MB", raising=False)
        from pages.ui import caches

        caches.upload_store.clear()
        yield root
        caches.upload_store.clear()


@pytest.fixture
def server_after_first_navigation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run goes through ``dashboard.py``, as on a server that has served a page before.

    Because the pages live in a folder called ``pages/``, Streamlit starts in
    its legacy multipage mode, where a page URL runs the page file alone; the
    first ``st.navigation`` call turns that off for the rest of the process.
    AppTest resets the flag before *every* run, so without this each run
    after ``switch_page`` would execute the page without the sidebar (see
    ``test_pages.py::test_page_reruns_go_through_the_entry_script``).
    """
    from pages.ui.navigation import entry_script_for_every_run

    entry_script_for_every_run(monkeypatch)


#: The price per row the pages' compute budget uses in these tests: the 2-core CPU's, idle (gradient rows of
#: both objectives about 60 ms, forward rows 15 ms; benchmarks/RESULTS.md, "The compute budget"). Measured
#: prices follow the machine's load; pinned, whether a view asks first does not depend on it.
PINNED_PASS_COST = (0.06, 0.015)


@pytest.fixture(autouse=True)
def pinned_pass_cost(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every page's estimate priced at :data:`PINNED_PASS_COST`; returns the (model, precision) of each pricing."""
    from pages.ui import budget
    from saliency_core.serving.compute_cost import PassCost

    priced: list = []

    def pinned(model, precision: str) -> PassCost:
        priced.append((model.name, precision))
        return PassCost(*PINNED_PASS_COST)

    monkeypatch.setattr(budget, "pass_cost", pinned)
    monkeypatch.delenv("SALIENCY_CONFIRM_ABOVE_S", raising=False)  # the default budget unless a test sets one
    return priced


@pytest.fixture
def new_app(upload_dir: Path, server_after_first_navigation: None) -> Callable[..., object]:
    """Factory for a fresh AppTest of ``dashboard.py`` (a new browser session).

    ``new_app(page="pages/saliency.py", **query_params)`` returns the AppTest,
    not yet run.
    """
    return _factory()


@pytest.fixture
def new_app_unpatched(upload_dir: Path) -> Callable[..., object]:
    """Like ``new_app``, with Streamlit's page handling left exactly as AppTest sets it up."""
    return _factory()


def _factory() -> Callable[..., object]:
    from streamlit.testing.v1 import AppTest

    def make(page: str | None = None, **query: str) -> AppTest:
        at = AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT_S)
        at.query_params.update(query)
        if page is not None:
            at.switch_page(page)
        return at

    return make


@pytest.fixture(scope="session")
def browser():
    """One Chromium for every browser test module (skipped, or failed with REQUIRE_BROWSER=1, without it)."""
    yield from launch_browser()


# --------------------------------------------------------------------------- Chromium (tests/app/chromium.py)


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
