"""The Methods page in a real Chromium: every chart renders, and a shared link opens the same view.

Uses the server, browser and helpers of :mod:`tests.app.test_browser` (same
setup: Debian's Chromium, ``streamlit run`` on 127.0.0.1, a fresh context
per session). The screenshot of the whole page is the README's, ``docs/methods.png``.
"""

from __future__ import annotations

import shutil

import pytest

from tests.app import test_browser as shared
from tests.app.test_browser import (
    DATAFRAME,
    FAITHFULNESS_WAIT_MS,
    PLOT,
    REPO,
    assert_healthy,
    query,
    screenshot,
    wait_for_counts,
    wait_idle,
)

# The shared module's fixtures, by name: its server (started for this module), browser and sessions.
app_url, browser, session_on, warm_url, new_session = (
    shared.app_url, shared.browser, shared.session_on, shared.warm_url, shared.new_session)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GRID = ".st-key-grid .js-plotly-plot"
AGREEMENT = ".st-key-agreement .js-plotly-plot"
README_SHOT = REPO / "docs" / "methods.png"


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
    assert [n.split("=", 1)[0] for n in names] == [
        f"{t} · {o}" for t, objs in (("Gradient", ("score", "loss")), ("Gradient × input", ("score", "−L")),
                                     ("Guided backprop", ("score", "−L")), ("Grad-CAM", ("score", "−L")))
        for o in objs]
    assert page.get_by_role("button", name="Ranking (CSV)").count() == 1
    assert query(page).get("rank") == ["1"]
    assert_healthy(s, "/methods")
    shot = screenshot(page, "methods")
    README_SHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, README_SHOT)


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
