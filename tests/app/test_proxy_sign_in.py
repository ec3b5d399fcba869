"""The shipped nginx template with sign-in on (``@SIGN_IN@`` = on) in front of a dashboard with sign-in.

The probe: a signed-in session's images and downloads (``/media/<sha224>``) answered 200 to a client
without cookies while the session lived. Streamlit serves media to anyone with the address, so the
proxy refuses media (and uploads) to clients without the identity cookie. Here a real OIDC provider
(``oidc-provider-mock``, as in ``test_browser_sign_in.py``), the dashboard with its own secrets file,
nginx from the template and Chromium over HTTPS: Alice signs in through the proxy, and her page's
media addresses are asked for with and without her cookie.

Needs nginx, openssl and Chromium (skipped without them unless REQUIRE_PROXY=1 or REQUIRE_BROWSER=1).
Logs: ``artifacts/proxy-sign-in-server.log``, ``artifacts/proxy-sign-in-nginx-*.log``.
"""

from __future__ import annotations

import os
import secrets
import sys
import urllib.request
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import pytest

from tests.app.chromium import COLD_WAIT_MS, SIDEBAR, VIEWPORT, _healthy, screenshot, serve, wait_idle
from tests.app.test_browser_sign_in import ALLOWED, COOKIE_USER, sign_in_at_provider
from tests.app.test_browser_sign_in import provider as provider  # the module's own OIDC provider (a fixture)
from tests.app.test_proxy import ARTIFACTS, Proxy, _program, assert_security_headers, free_ports, nginx_in_front

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SERVER_LOG = ARTIFACTS / "proxy-sign-in-server.log"
MEDIA_IMG = 'img[src*="/media/"]'


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, provider: str) -> Iterator[Proxy]:
    """nginx (sign-in on) in front of a dashboard whose redirect URI is the proxy's HTTPS origin."""
    _program("nginx")
    tmp = tmp_path_factory.mktemp("proxy-sign-in")
    https_port, http_port, app_port = free_ports(3)
    upstream = f"http://127.0.0.1:{app_port}"
    secrets_file = tmp / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "https://127.0.0.1:{https_port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        'client_id = "saliency-dashboard"\n'
        f'client_secret = "{secrets.token_hex(16)}"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )
    env = {**os.environ, "SALIENCY_UPLOAD_DIR": str(tmp / "uploads"), "SALIENCY_RESULTS_DIR": str(tmp / "results"),
           "SALIENCY_ALLOWED_EMAILS": ALLOWED, "SALIENCY_SIGNED_OUT_FILE": str(tmp / "signed-out.json"),
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(app_port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--secrets.files", str(secrets_file)]
    (tmp / "nginx").mkdir()
    with serve(request, cmd, SERVER_LOG, upstream, lambda: _healthy(upstream), env), \
            nginx_in_front(tmp / "nginx", upstream, https_port, http_port, sign_in="on",
                           logs="proxy-sign-in-nginx") as proxy:
        yield proxy


def test_media_and_uploads_need_the_identity_cookie_through_the_proxy(browser, site: Proxy):
    context = browser.new_context(viewport=VIEWPORT, ignore_https_errors=True)
    try:
        context.set_default_timeout(COLD_WAIT_MS)
        page = context.new_page()
        page.goto(f"{site.origin}/saliency?sample=chelsea")
        sign_in_at_provider(page, "alice")  # through the proxy, back on its HTTPS origin
        page.locator(f"{SIDEBAR} {MEDIA_IMG}").first.wait_for(state="visible")
        wait_idle(page, COLD_WAIT_MS)
        screenshot(page, "proxy-sign-in-signed-in")
        sources = page.eval_on_selector_all(MEDIA_IMG, "els => els.map(e => e.getAttribute('src'))")
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies() if c["name"].startswith(COOKIE_USER))
    finally:
        context.close()
    media = sorted({urlsplit(urljoin(site.origin + "/", src)).path for src in sources})
    assert media and cookie, (sources, cookie)

    for path in media:
        # Streamlit itself serves the address to anyone: it must be reachable only through nginx.
        with urllib.request.urlopen(f"{site.upstream}{path}", timeout=60) as direct:
            image = direct.read()
        assert direct.status == 200 and image
        probe = f"{path}?from=no-cookie"  # a line of its own in the access log
        resp, body = site.request("GET", probe)
        assert resp.status == 403, f"{path} without cookies: {resp.status}"
        assert image not in body and site.upstream_status(probe) == "-"
        assert_security_headers(resp, "refused media")
        resp, body = site.request("GET", path, {"Cookie": cookie})  # the signed-in browser still gets it
        assert (resp.status, body) == (200, image), (path, resp.status)

    name = media[0].removeprefix("/media/")
    for spelling in (f"/static/../media/{name}", f"//media/{name}", f"/%6Dedia/{name}", f"/media//{name}"):
        probe = f"{spelling}?from=spelling"
        resp, _ = site.request("GET", probe)
        assert resp.status == 403, (spelling, resp.status)
        assert site.upstream_status(probe) == "-", spelling
    resp, _ = site.request("GET", media[0], {"Cookie": "_streamlit_user="})  # an empty cookie is no cookie
    assert resp.status == 403

    path = "/_stcore/upload_file/a-session/a-file?from=no-cookie"
    resp, _ = site.request("PUT", path, {"Origin": site.origin, "Content-Type": "application/octet-stream"}, b"x")
    assert resp.status == 403 and site.upstream_status(path) == "-"
