"""In Chromium, at the window size of every browser test: small things seen on the pages (issue 22).

Nothing in the sidebar or on the Home page is cut off (the Method and Channel reduction selects, the
uploader's file types, the "Compare score vs loss" link); the Statistics summary ends with its last row;
every map of the Methods grid has its colour bar; the Dataset page shows why a file could not be used in
full, and each of the worst disagreements beside its two maps. What the pages say (AppTest) is in
test_page_polish.py and test_method_picker.py.
"""

from __future__ import annotations

import pytest

from saliency_core.methods.registry import shown_by_default
from tests.app.apptest import embedded_can_run
from tests.app.chromium import (
    DATAFRAME,
    MAIN,
    PLOT,
    SIDEBAR,
    TABLE,
    assert_healthy,
    opened,
    screenshot,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# test_browser's fixtures, registered here under their own names: this module's server has the batch job's
# results (app_url), warmed up once (warm_url); the browser is conftest's.

#: The text of every element under ``scope`` that is cut off: a select's value wider than its box, or text
#: hidden by its element's overflow (an ellipsis). Hidden elements (width 0) and text that may overflow
#: visibly are not counted.
CUT_OFF_JS = """scope => {
    const out = [];
    for (const root of document.querySelectorAll(scope)) {
        for (const el of root.querySelectorAll('*')) {
            if (el.clientWidth === 0) continue;
            const input = el.tagName === 'INPUT';
            const text = input ? el.value : (el.children.length === 0 ? el.textContent : '');
            if (!text || !text.trim()) continue;
            if (!input && getComputedStyle(el).overflowX === 'visible') continue;
            if (el.scrollWidth > el.clientWidth + 1) out.push(text.trim());
        }
    }
    return out;
}"""


def cut_off(page, scope: str) -> list[str]:
    return page.evaluate(CUT_OFF_JS, scope)


def test_nothing_in_the_sidebar_or_on_the_home_page_is_cut_off(new_session):
    # The longest method title and reduction label there are today; Advanced open, so its selects are drawn.
    s = opened(new_session, "/?method=integrated_gradients", {'[data-testid="stMetric"]': 3})
    page = s.page
    page.locator(SIDEBAR).get_by_text("Advanced").click()
    page.locator(f'{SIDEBAR} [data-testid="stSelectbox"]').filter(has_text="Channel reduction").wait_for()
    wait_idle(page)
    assert_healthy(s, "home")
    screenshot(page, "polish-home-sidebar")
    assert cut_off(page, SIDEBAR) == []
    assert cut_off(page, MAIN) == []
    values = page.locator(f'{SIDEBAR} [data-testid="stSelectbox"] input').evaluate_all("es => es.map(e => e.value)")
    assert "Integrated Gradients" in values and "max |g| over RGB" in values, values  # what was measured
    instructions = page.locator('[data-testid="stFileUploaderDropzoneInstructions"]').inner_text()
    assert "NPZ" in instructions, instructions  # the last of the file types
    assert page.locator(MAIN).get_by_text("Compare score vs loss").is_visible()


def test_the_statistics_summary_ends_with_its_last_row(new_session):
    s = opened(new_session, "/statistics", {PLOT: 2, DATAFRAME: 3})
    summary = s.page.locator(f"{MAIN} {DATAFRAME}").first
    # The grid is a canvas: its scroller's inner box is as tall as the header and rows it holds.
    shown, rows = summary.evaluate("""d => { const s = d.querySelector('.dvn-scroller');
        return [s.clientHeight, s.querySelector('.dvn-scroll-inner').getBoundingClientRect().height]; }""")
    assert rows >= shown - 3, f"{shown - rows:.0f} px of empty row under the last statistic"
    assert_healthy(s, "statistics")
    screenshot(s.page, "polish-statistics")


def test_every_map_of_the_methods_grid_has_its_colour_bar(new_session):
    s = opened(new_session, "/methods", {".st-key-grid .js-plotly-plot": 1})
    grid = s.page.locator(".st-key-grid .js-plotly-plot")
    maps = grid.evaluate("gd => gd.data.filter(t => t.type === 'heatmap').length")
    assert maps == 2 * len(embedded_can_run(shown_by_default()))  # every one-pass method it can run, score and loss
    assert grid.locator("g.colorbar").count() == maps
    assert_healthy(s, "methods")
    screenshot(s.page, "polish-methods-grid")


def test_the_dataset_page_shows_whole_reasons_and_the_disagreeing_maps(new_session):
    s = opened(new_session, "/dataset", {PLOT: 2, TABLE: 1})
    page = s.page
    reason = page.locator(TABLE).get_by_text("The file is truncated or corrupt", exact=False)
    reason.scroll_into_view_if_needed()
    assert reason.is_visible()
    assert reason.inner_text().endswith("Upload a PNG, JPEG, WebP, GIF, BMP or TIFF photograph.")
    assert cut_off(page, TABLE) == []
    # The six images whose two maps agree least, each beside its two maps (computed here: no --save-maps).
    for i in range(6):
        pair = page.locator(f".st-key-dataset_pair_{i} .js-plotly-plot")
        pair.wait_for(state="visible")
        assert pair.evaluate("gd => gd.data.map(t => t.type)") == ["image", "heatmap", "heatmap"]
    assert_healthy(s, "dataset")
    screenshot(page, "polish-dataset")
