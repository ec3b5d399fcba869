"""In Chromium: on the Faithfulness page, dragging a box on the image (Plotly's box select) adds the
localisation scores to the metrics table, and the box goes into the link (issue 26's done-when)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.app.chromium import (
    COLD_WAIT_MS,
    MAIN,
    REPO,
    _streamlit,
    assert_healthy,
    query,
    screenshot,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


LOG = REPO / "artifacts" / "browser-metrics-server.log"
BOX_PLOT = ".st-key-faith_box_chart .js-plotly-plot"
TABLE = f'{MAIN} [data-testid="stDataFrame"] >> nth=0 >> [role="row"]'  # the metrics table is the page's first
LOCALISATION = ("Pointing game", "Relevance mass accuracy", "Relevance rank accuracy")


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _streamlit(request, tmp_path_factory.mktemp("uploads"), LOG) as url:
        yield url


def table_text(page) -> str:
    return "\n".join(page.locator(TABLE).all_inner_texts())


def wait_for_rows(page, titles, timeout_s: float = 30.0) -> str:
    """The table's text once it shows every row of ``titles`` (the grid draws its rows a moment after the run)."""
    end = time.monotonic() + timeout_s
    while not all(t in (shown := table_text(page)) for t in titles) and time.monotonic() < end:
        page.wait_for_timeout(250)
    assert all(t in shown for t in titles), shown
    return shown


def test_drawing_a_box_shows_the_localisation_scores(session_on, server: str):
    s = session_on(server)
    page = s.page
    s.goto("/faithfulness?sample=chelsea&deletion_steps=5&stages=2")
    wait_idle(page, COLD_WAIT_MS)
    page.locator(BOX_PLOT).wait_for(state="visible", timeout=COLD_WAIT_MS)
    page.locator(TABLE).first.wait_for(state="attached")
    assert "Sparseness" in table_text(page) and not any(t in table_text(page) for t in LOCALISATION)

    drag = page.locator(f"{BOX_PLOT} .nsewdrag").first  # the plot area that takes the drag
    drag.scroll_into_view_if_needed()
    b = drag.bounding_box()
    page.mouse.move(b["x"] + 0.25 * b["width"], b["y"] + 0.2 * b["height"])
    page.mouse.down()
    page.mouse.move(b["x"] + 0.5 * b["width"], b["y"] + 0.5 * b["height"], steps=8)
    page.mouse.move(b["x"] + 0.75 * b["width"], b["y"] + 0.8 * b["height"], steps=8)
    page.mouse.up()
    page.wait_for_function(f"() => document.querySelector({MAIN!r}).innerText.includes('Localisation against')",
                           timeout=COLD_WAIT_MS)
    wait_idle(page, COLD_WAIT_MS)
    shown = wait_for_rows(page, LOCALISATION)
    box = [int(v) for v in query(page)["box"][0].split(",")]
    # The drag covered the middle of the 224 px crop (the plot area has margins around the image).
    assert 0 <= box[0] < 112 < box[2] <= 224 and 0 <= box[1] < 112 < box[3] <= 224, box
    assert box[2] - box[0] > 80 and box[3] - box[1] > 100, box
    assert_healthy(s, "faithfulness with a box")
    screenshot(page, "faithfulness-metrics-box")

    # The link alone shows the same scores to someone else.
    other = session_on(server)
    other.goto(f"/faithfulness?sample=chelsea&deletion_steps=5&stages=2&box={','.join(map(str, box))}")
    wait_idle(other.page, COLD_WAIT_MS)
    other.page.locator(TABLE).first.wait_for(state="attached")
    assert wait_for_rows(other.page, LOCALISATION) == shown
