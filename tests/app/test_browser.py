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
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from saliency_core.methods.registry import ATTRIBUTION_METHODS, by_family, map_title, shown_by_default
from tests.app.apptest import embedded_can_run
from tests.app.chromium import (
    _SERVED,
    COLD_WAIT_MS,
    DATAFRAME,
    FAITHFULNESS_WAIT_MS,
    HEATMAP,
    MAIN,
    PAGES,
    PLOT,
    SERVER_LOG,
    SIDEBAR,
    UPLOAD_DIRS,
    UPLOAD_INPUT,
    WAIT_MS,
    _streamlit,
    assert_healthy,
    heatmap_checksum,
    main_markdown,
    opened,
    photos,
    png_bytes,
    query,
    screenshot,
    server_log_tracebacks,
    upload,
    wait_for_caption,
    wait_for_counts,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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


def test_methods_page_renders_every_chart(new_session):
    """The fast methods' grid, the agreement matrix, the parameters table and the ranking with its downloads."""
    s = opened(new_session, "/methods?rank=1", {GRID: 1, AGREEMENT: 1, DATAFRAME: 2}, FAITHFULNESS_WAIT_MS)
    page = s.page
    assert page.locator("h1").first.inner_text() == "Which method should I believe?"
    assert page.locator(PLOT).count() == 2
    names = grid_checksum(page).split("|")
    # Every method that declares itself fast enough (one pass), score then loss, in registry order.
    assert [n.split("=", 1)[0] for n in names] == [
        map_title(m, o) for m in embedded_can_run(shown_by_default()) for o in ("score", "loss")]
    assert page.get_by_role("button", name="Ranking (CSV)").count() == 1
    assert query(page).get("rank") == ["1"]
    assert_healthy(s, "/methods")
    screenshot(page, "methods")


EVERY_METHOD_WAIT_MS = 900_000  # every registered method at its defaults: minutes on a busy 2-core CPU


def test_every_family_added_by_its_button_gives_every_methods_maps(new_session):
    """The Methods page with every family, one "+ family" click each (issue 24): every registered method's score and
    loss maps in the grid, the default pick first, then the families in their order, and nothing refused."""
    s = opened(new_session, "/methods", {GRID: 1, AGREEMENT: 1}, FAITHFULNESS_WAIT_MS)
    page = s.page
    for family, names in by_family().items():
        if not embedded_can_run(names):  # the attention family: no button for the embedded CNN
            continue
        page.locator(f".st-key-methods_add_{family} button").first.click()
        # The click's rerun has written the pick to the link before it computes; then wait for it to finish.
        page.wait_for_function("names => names.every(n => decodeURIComponent(location.search).includes(n))",
                               arg=list(names), timeout=WAIT_MS)
        wait_idle(page, EVERY_METHOD_WAIT_MS)
    every = list(embedded_can_run(dict.fromkeys([*shown_by_default(),
                                                  *(m for names in by_family().values() for m in names)])))
    assert sorted(every) == sorted(embedded_can_run(ATTRIBUTION_METHODS))
    page.wait_for_function(f"sel => document.querySelector(sel).data.length === {2 * len(every)}", arg=GRID,
                           timeout=EVERY_METHOD_WAIT_MS)
    names = [n.split("=", 1)[0] for n in grid_checksum(page).split("|")]
    assert names == [map_title(m, o) for m in every for o in ("score", "loss")]
    assert page.get_by_text("can't run here").count() == 0
    assert_healthy(s, "/methods with every family")
    screenshot(page, "methods-every-family")


def test_shared_link_with_smoothgrad_parameters_opens_the_same_view(new_session):
    owner = opened(new_session, "/methods?method=smoothgrad&samples=8&seed=3&methods=gradient,smoothgrad"
                                "&scale=method", {GRID: 1, AGREEMENT: 1, DATAFRAME: 1}, FAITHFULNESS_WAIT_MS)
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
