"""Sign-in for real: a real OpenID Connect provider, `streamlit run dashboard.py` with [auth], and Chromium.

The provider is PyPI's ``oidc-provider-mock`` (a real OIDC server: discovery,
authorization code with PKCE, signed ID tokens, end-session), started on
127.0.0.1 as a subprocess; its login form signs in whichever predefined user's
button is clicked. The dashboard gets a secrets file of its own through
``--secrets.files`` and ``SALIENCY_ALLOWED_EMAILS=*@example.com``. Nothing of
Streamlit's sign-in is mocked.

The attacks of the project's security probe are replayed here against the
running server: uploads from a session that never signed in (with a bare
WebSocket client, ``tests/app/streamlit_client.py``), a closed session's
uploads left in memory, an identity cookie copied before "Sign out", and a
Kelvin-sign look-alike of an allowed address.

Screenshots land in ``artifacts/screenshots/sign-in-*.png``; the server's and
the provider's logs in ``artifacts/``. Every process started here is stopped
by its PID (each leads its own process group).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.app.chromium import (
    COLD_WAIT_MS,
    EXCEPTION,
    MAIN,
    PLOT,
    SIDEBAR,
    VIEWPORT,
    WAIT_MS,
    _free_port,
    _healthy,
    _no_browser,
    screenshot,
    serve,
    wait_for_counts,
    wait_idle,
)
from tests.app.streamlit_client import Client, uploaded_bytes, wait_for_uploaded_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
SERVER_LOG = ARTIFACTS / "sign-in-server.log"
PROVIDER_LOG = ARTIFACTS / "sign-in-provider.log"

USERS = {  # sub -> claims the provider puts in the ID token (scope "openid email profile")
    "alice": {"email": "alice@example.com", "email_verified": True, "name": "Alice Liddell"},
    "eve": {"email": "eve@other.org", "email_verified": True, "name": "Eve"},
    "mallory": {"email": "mallory@example.com", "email_verified": False, "name": "Mallory"},
    # A Kelvin sign (U+212A) for the K: str.lower() made it "kate@example.com", and it was let in.
    "kelvin": {"email": "\u212aate@example.com", "email_verified": True, "name": "Kelvin"},
}
ALLOWED = "*@example.com"
SIGN_IN = 'button:has-text("Sign in")'
SIDEBAR_NAV = '[data-testid="stSidebarNav"]'
COOKIE_USER = "_streamlit_user"
COOKIE_RETURN = "saliency_return"
MB = 1024 * 1024
FREED_WITHIN_S = 60  # a closed session's uploads are freed when it disconnects; Streamlit alone: 120 s and more


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def _process(request: pytest.FixtureRequest, cmd: list[str], log: Path, ready_url: str, ready,
             env: dict[str, str] | None = None):
    """:func:`tests.app.chromium.serve` until ``ready(status, body)`` of ``ready_url``."""
    return serve(request, cmd, log, ready_url, lambda: ready(*_get(ready_url)), env)


@pytest.fixture(scope="module")
def provider(request) -> Iterator[str]:
    """A real OpenID Connect provider on 127.0.0.1; yields its issuer URL."""
    if importlib.util.find_spec("oidc_provider_mock") is None:  # found, not imported: it runs in its own process
        _no_browser("oidc-provider-mock is not installed (pip install -r requirements-dev.txt)")
    port = _free_port()
    cmd = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port)]
    for sub, claims in USERS.items():
        cmd += ["--user-claims", json.dumps({"sub": sub, **claims})]
    url = f"http://127.0.0.1:{port}"
    with _process(request, cmd, PROVIDER_LOG, f"{url}/.well-known/openid-configuration",
                  lambda status, body: status == 200 and '"issuer"' in body):
        yield url


@pytest.fixture(scope="module")
def app(request, provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard with sign-in on (its own secrets file), allowing ``*@example.com``; yields its base URL.

    Fresh: its first request is the first test's page URL (Streamlit's legacy pages/ mode is still on).
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tmp = tmp_path_factory.mktemp("sign-in")
    secrets_file = tmp / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "{url}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        'client_id = "saliency-dashboard"\n'
        f'client_secret = "{secrets.token_hex(16)}"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )
    env = {**os.environ, "SALIENCY_UPLOAD_DIR": str(tmp / "uploads"), "SALIENCY_RESULTS_DIR": str(tmp / "results"),
           "SALIENCY_ALLOWED_EMAILS": ALLOWED, "SALIENCY_SIGNED_OUT_FILE": str(tmp / "signed-out.json"),
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--secrets.files", str(secrets_file)]
    with _process(request, cmd, SERVER_LOG, f"{url}/_stcore/health", lambda status, body: status == 200, env):
        assert _healthy(url)
        yield url


@pytest.fixture
def context(browser):
    """A fresh browser context: no cookies, no session."""
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    ctx.on("page", lambda p: p.on("pageerror", lambda exc: errors.append(str(exc))))
    ctx.js_errors = errors
    yield ctx
    ctx.close()


# --------------------------------------------------------------------------- helpers


def path_and_query(page) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(page.url)
    return parts.path, parse_qs(parts.query)


def assert_sign_in_only(page, where: str) -> None:
    """The sign-in page and nothing of the dashboard: no page list, no pickers, no plots, no data."""
    page.locator(SIGN_IN).first.wait_for(state="visible")
    wait_idle(page)
    main = page.locator(MAIN).inner_text()
    assert "Sign in with your organisation's account" in main, f"{where}: {main!r}"
    assert page.locator(SIDEBAR_NAV).count() == 0, f"{where}: the list of pages is shown"
    assert page.locator(PLOT).count() == 0, f"{where}: a plot is shown"
    assert page.locator(f'{SIDEBAR} [data-testid="stSelectbox"]').count() == 0, f"{where}: the sidebar's pickers"
    for text in ("Classifier", "Which pixels", "espresso", "Saliency map", "Score gradient"):
        assert page.get_by_text(text).count() == 0, f"{where}: {text!r} is on screen"
    assert page.locator(EXCEPTION).count() == 0


def sign_in_at_provider(page, sub: str) -> None:
    """On the sign-in page: click Sign in, then the provider's button for ``sub``."""
    page.locator(SIGN_IN).first.click()
    page.wait_for_url("**/oauth2/authorize**")
    page.get_by_role("button", name=sub, exact=True).click()


def sign_out(page) -> None:
    """Click the dashboard's Sign out, then end the session at the provider; back on the sign-in page."""
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/oauth2/end_session**")
    page.get_by_role("button", name="End session").click()
    page.locator(SIGN_IN).first.wait_for(state="visible")


def cookie_names(context) -> set[str]:
    return {c["name"] for c in context.cookies()}


def signed_in(context, app: str, sub: str):
    """A page of ``context`` signed in as ``sub`` (allowed), on the home page; its identity cookies."""
    page = context.new_page()
    page.goto(f"{app}/")
    assert_sign_in_only(page, f"{sub} before sign-in")
    sign_in_at_provider(page, sub)
    page.locator(SIDEBAR).get_by_text("Signed in as").wait_for(timeout=COLD_WAIT_MS)
    wait_idle(page, COLD_WAIT_MS)
    return page, [c for c in context.cookies() if c["name"].startswith(COOKIE_USER)]


# --------------------------------------------------------------------------- tests


def test_a_shared_link_opens_after_sign_in_and_sign_out_ends_the_session(app, context):
    page = context.new_page()
    # The very first request to this server: a colleague's link to Compare, straight to the page URL.
    page.goto(f"{app}/compare?sample=chelsea&objective=loss")
    wait_idle(page, COLD_WAIT_MS)
    assert_sign_in_only(page, "a link before sign-in")
    assert page.get_by_text("The link you followed opens once you have signed in.").count() == 1
    assert COOKIE_RETURN in cookie_names(context)
    screenshot(page, "sign-in-1-sign-in-page")

    sign_in_at_provider(page, "alice")
    page.wait_for_url(lambda u: urlsplit(u).path == "/compare" and "sample=chelsea" in u, timeout=COLD_WAIT_MS)
    wait_idle(page, COLD_WAIT_MS)
    wait_for_counts(page, {PLOT: 4}, COLD_WAIT_MS)
    wait_idle(page, COLD_WAIT_MS)
    path, query = path_and_query(page)
    assert (path, query.get("sample"), query.get("objective")) == ("/compare", ["chelsea"], ["loss"])
    assert "Chelsea" in page.locator(MAIN).inner_text()
    sidebar = page.locator(SIDEBAR).inner_text()
    assert "Signed in as" in sidebar and "alice@example.com" in sidebar and "Alice Liddell" in sidebar, sidebar
    assert page.locator(SIDEBAR_NAV).count() == 1
    # The kept link is used once: its cookie is gone.
    page.wait_for_function(f"() => !document.cookie.includes({COOKIE_RETURN + '='!r})")
    assert COOKIE_USER in cookie_names(context)
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "sign-in-2-shared-link-after-sign-in")

    # Signed in, another link opens directly.
    page.goto(f"{app}/saliency?sample=coffee&objective=score")
    wait_idle(page)
    wait_for_counts(page, {PLOT: 1})
    assert urlsplit(page.url).path == "/saliency"
    assert page.get_by_role("heading", name="Saliency map").count() == 1

    sign_out(page)
    assert_sign_in_only(page, "after sign-out")
    assert COOKIE_USER not in cookie_names(context)
    screenshot(page, "sign-in-3-signed-out")
    page.goto(f"{app}/saliency?sample=coffee")  # the old URL shows only the sign-in again
    assert_sign_in_only(page, "a page URL after sign-out")
    assert not context.js_errors, context.js_errors


@pytest.mark.parametrize("sub", ["eve", "mallory", "kelvin"])
def test_a_user_off_the_allow_list_or_unverified_is_refused(app, context, sub):
    page = context.new_page()
    page.goto(f"{app}/saliency?sample=chelsea")
    assert_sign_in_only(page, f"{sub} before sign-in")
    sign_in_at_provider(page, sub)
    page.get_by_role("heading", name="Not allowed").wait_for()
    wait_idle(page)
    main = page.locator(MAIN).inner_text()
    assert USERS[sub]["email"] in main
    assert page.locator(PLOT).count() == 0 and page.locator(SIDEBAR_NAV).count() == 0
    assert page.locator(f'{SIDEBAR} [data-testid="stSelectbox"]').count() == 0
    for text in ("Classifier", "Saliency map", "tabby"):
        assert page.get_by_text(text).count() == 0, f"{text!r} is on screen"
    # Other pages are refused the same way.
    page.goto(f"{app}/dataset")
    page.get_by_role("heading", name="Not allowed").wait_for()
    wait_idle(page)
    assert page.get_by_text("Dataset results").count() == 0
    screenshot(page, f"sign-in-4-refused-{sub}")
    sign_out(page)
    assert_sign_in_only(page, f"{sub} after sign-out")
    assert not context.js_errors, context.js_errors


def test_nothing_is_reachable_without_a_valid_session(app, context):
    # A forged identity cookie (right name, JSON of an allowed user, not signed by the server).
    host = urlsplit(app).hostname
    forged = json.dumps({"email": "alice@example.com", "email_verified": True, "is_logged_in": True})
    context.add_cookies([{"name": COOKIE_USER, "value": forged, "domain": host, "path": "/"}])
    page = context.new_page()
    for path in ("/", "/saliency?sample=chelsea", "/statistics", "/dataset"):
        page.goto(app + path)
        assert_sign_in_only(page, f"{path} with a forged cookie")
    # Plain HTTP: a page URL serves only the app's static shell, the same for every page.
    status, body = _get(f"{app}/saliency?sample=chelsea")
    _, home = _get(f"{app}/")
    assert status == 200 and body == home
    for text in ("Saliency map", "espresso", "Classifier", "alice"):
        assert text not in body
    assert not context.js_errors, context.js_errors


def test_a_visitor_who_never_signs_in_cannot_keep_uploads_on_the_server(app):
    """The probe: with a session id from the WebSocket and the XSRF cookie, anyone could PUT files (40 x 19 MB
    stayed in memory). A session the gate has not let in is refused, and nothing is kept."""
    before = uploaded_bytes(app)
    with Client(app) as probe:
        probe.open(COLD_WAIT_MS / 1000)  # the sign-in page's run
        statuses = [probe.upload(2 * MB) for _ in range(3)]
        held = uploaded_bytes(app)
    assert statuses == [403, 403, 403]
    assert held == before


def test_a_closed_sessions_uploads_are_freed(app, context):
    page, cookies = signed_in(context, app, "alice")
    page.close()
    with Client(app, {c["name"]: c["value"] for c in cookies}) as tab:
        tab.open(COLD_WAIT_MS / 1000)  # a signed-in run: the gate lets it in
        assert tab.upload(2 * MB) == 204  # a signed-in session uploads as before
        held = uploaded_bytes(app)
        assert held >= 2 * MB
    # The tab is closed: its session waits 120 s for a reconnect, but its files go now.
    after = wait_for_uploaded_bytes(app, lambda n: n <= held - 2 * MB, FREED_WITHIN_S)
    assert after <= held - 2 * MB, f"{after} bytes still held {FREED_WITHIN_S} s after the tab closed"


def test_an_identity_cookie_copied_before_sign_out_no_longer_signs_in(app, context, browser):
    """The probe: Streamlit's identity cookie is the only record of a sign-in, so a copy taken before "Sign out"
    kept working. Sign-out now ends that sign-in on the server: the copy shows only the sign-in page and can't
    upload."""
    page, copied = signed_in(context, app, "alice")
    assert copied
    sign_out(page)
    assert_sign_in_only(page, "after sign-out")

    thief = browser.new_context(viewport=VIEWPORT)
    try:
        thief.set_default_timeout(WAIT_MS)
        thief.add_cookies(copied)
        stolen = thief.new_page()
        for path in ("/", "/saliency?sample=chelsea"):
            stolen.goto(app + path)
            assert_sign_in_only(stolen, f"{path} with a cookie copied before sign-out")
        screenshot(stolen, "sign-in-5-copied-cookie-after-sign-out")
    finally:
        thief.close()
    with Client(app, {c["name"]: c["value"] for c in copied}) as probe:
        probe.open(WAIT_MS / 1000)
        assert probe.upload(MB) == 403
    assert not context.js_errors, context.js_errors
