"""The shipped nginx template (``deploy/nginx/saliency.conf``) in front of a real dashboard.

The template is rendered with free ports on 127.0.0.1 and a self-signed certificate made with
``openssl`` for this run, nginx runs in the foreground from a temporary prefix (``-p``; its pid,
logs and temporary files stay there) and Streamlit behind it, and every check goes through the
proxy: the security headers on pages, assets, errors and redirects; ``/_stcore/metrics`` hidden;
the Origin check on uploads and on the WebSocket handshake; the upload size limit; and Chromium
using the dashboard over HTTPS, an upload included.

Needs Debian's ``nginx`` and ``openssl``. Without them these tests skip, unless ``REQUIRE_PROXY=1``
or ``REQUIRE_BROWSER=1`` is set (as in CI), where a missing program fails. nginx's logs land in
``artifacts/proxy-nginx-*.log``, the dashboard's in ``artifacts/proxy-server.log``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.app.chromium import (
    COLD_WAIT_MS,
    DATAFRAME,
    HEATMAP,
    REPO,
    UPLOAD_INPUT,
    VIEWPORT,
    _free_port,
    _stop,
    _streamlit,
    assert_healthy,
    photos,
    png_bytes,
    screenshot,
    upload,
    wait_for_caption,
    wait_for_counts,
    wait_idle,
)

TEMPLATE = REPO / "deploy" / "nginx" / "saliency.conf"
STREAMLIT_CONFIG = REPO / ".streamlit" / "config.toml"
ARTIFACTS = REPO / "artifacts"
SERVER_LOG = ARTIFACTS / "proxy-server.log"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
FOREIGN = "https://evil.example"
NGINX_START_TIMEOUT_S = 20
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def max_upload_mb() -> int:
    """``server.maxUploadSize`` of ``.streamlit/config.toml`` (read as text: tomllib is Python 3.11+)."""
    found = re.findall(r"^maxUploadSize\s*=\s*(\d+)\s*$", STREAMLIT_CONFIG.read_text(), re.M)
    assert len(found) == 1, found
    return int(found[0])


def render(template: str, **values: str) -> str:
    """``template`` with each ``@NAME@`` replaced by ``values["NAME"]``; every placeholder must be given."""
    for name, value in values.items():
        assert f"@{name}@" in template, f"the template has no @{name}@"
        template = template.replace(f"@{name}@", value)
    left = sorted(set(PLACEHOLDER.findall(template)))
    assert not left, f"placeholders not rendered: {left}"
    return template


# --------------------------------------------------------------------------- checks without nginx


def test_template_upload_limit_matches_streamlit():
    """nginx lets through every upload Streamlit accepts: server.maxUploadSize plus Streamlit's own
    1 MB allowance for the multipart framing, no more (a bigger body is refused before buffering)."""
    max_mb = max_upload_mb()
    limits = re.findall(r"^\s*client_max_body_size\s+(\d+)m;", TEMPLATE.read_text(), re.M)
    assert limits == [str(max_mb + 1)], (limits, max_mb)


def test_template_renders_with_every_placeholder():
    names = set(PLACEHOLDER.findall(TEMPLATE.read_text()))
    assert names == {"@SERVER_NAME@", "@PUBLIC_ORIGIN@", "@HTTPS_LISTEN@", "@HTTP_LISTEN@", "@UPSTREAM@",
                     "@TLS_CERTIFICATE@", "@TLS_CERTIFICATE_KEY@", "@SIGN_IN@"}, names


def test_readme_sed_renders_every_placeholder():
    """deploy/README.md's sed command, run as written (up to its pipe), leaves no placeholder in the site."""
    readme = (REPO / "deploy" / "README.md").read_text().split("## Deploying behind a proxy", 1)[1]
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    joined = block.replace("\\\n", " ")  # continuation lines joined, as the shell does
    command = joined.splitlines()[0].split(" | ", 1)[0]  # the sed, without the install into /etc
    assert command.startswith("sed ") and command.endswith(" deploy/nginx/saliency.conf"), command
    rendered = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not PLACEHOLDER.findall(rendered), sorted(set(PLACEHOLDER.findall(rendered)))
    assert "listen 443 ssl;" in rendered and "server 127.0.0.1:8501;" in rendered
    assert 'map "off:$cookie__streamlit_user"' in rendered  # sign-in is off by default, and so is the README's


# --------------------------------------------------------------------------- nginx in front of the dashboard


def _required(msg: str) -> None:
    """Skip, or fail where the proxy tests must run (REQUIRE_PROXY=1 or REQUIRE_BROWSER=1, as in CI)."""
    if os.environ.get("REQUIRE_PROXY") == "1" or os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_PROXY/REQUIRE_BROWSER is set but {msg}")
    pytest.skip(msg)


def _program(name: str) -> str:
    found = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name)
                                        if p.exists()), None)
    if found is None:
        _required(f"{name} is not installed (apt-get install nginx openssl)")
    return found


@dataclass
class Proxy:
    origin: str  # https://127.0.0.1:<port>, the site's own origin
    https_port: int
    http_port: int
    upstream: str  # the dashboard itself, http://127.0.0.1:<port>
    tls: ssl.SSLContext  # trusts this run's certificate only
    access_log: Path

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[http.client.HTTPResponse, bytes]:
        """One request over HTTPS through nginx (certificate and host name verified); the response and its body."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.https_port, context=self.tls, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = b"" if resp.status == 101 else resp.read()
            return resp, data
        finally:
            conn.close()

    def upstream_status(self, path: str) -> str:
        """What the dashboard answered nginx for the request to ``path`` ("-": nginx never asked it)."""
        pattern = re.compile(rf"^\S+ {re.escape(path)} \d+ upstream=(\S+)$", re.M)
        deadline = time.monotonic() + 5  # nginx writes the line just after the response
        while True:
            found = pattern.findall(self.access_log.read_text())
            if found or time.monotonic() > deadline:
                assert len(found) == 1, f"{len(found)} log lines for {path}"
                return found[0]
            time.sleep(0.05)


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([_program("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def _nginx_conf(prefix: Path, site: Path) -> str:
    """A whole nginx.conf for a foreground nginx whose files all stay under ``prefix``; includes ``site``."""
    temp = {name: prefix / "temp" / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers as root: they write under a root-only tmp dir
    return f"""daemon off;
{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    log_format saliency_test '$request_method $request_uri $status upstream=$upstream_status';
    access_log {prefix / "access.log"} saliency_test;
{"".join(f"    {name}_temp_path {path};{chr(10)}" for name, path in temp.items())}
    include {site};
}}
"""


def _answers(port: int, tls: ssl.SSLContext) -> bool:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=2)
    try:
        conn.request("GET", "/_stcore/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def free_ports(n: int) -> list[int]:
    """``n`` different free ports on 127.0.0.1."""
    ports: list[int] = []
    while len(ports) < n:
        if (port := _free_port()) not in ports:
            ports.append(port)
    return ports


@contextlib.contextmanager
def nginx_in_front(prefix: Path, upstream: str, https_port: int, http_port: int, sign_in: str = "off",
                   logs: str = "proxy-nginx") -> Iterator[Proxy]:
    """nginx from the rendered template in front of ``upstream`` (http://host:port), until the block ends.

    ``sign_in``: the template's @SIGN_IN@. The certificate, config, logs and temporary files stay under
    ``prefix``; nginx is stopped by its PID and its logs are copied to ``artifacts/<logs>-*.log``.
    """
    nginx = _program("nginx")
    cert, key = _certificate(prefix)
    tls = ssl.create_default_context(cafile=str(cert))
    origin = f"https://127.0.0.1:{https_port}"
    site = prefix / "saliency.conf"
    site.write_text(render(TEMPLATE.read_text(), SERVER_NAME="127.0.0.1", PUBLIC_ORIGIN=origin,
                           HTTPS_LISTEN=f"127.0.0.1:{https_port}", HTTP_LISTEN=f"127.0.0.1:{http_port}",
                           UPSTREAM=upstream.removeprefix("http://"), TLS_CERTIFICATE=str(cert),
                           TLS_CERTIFICATE_KEY=str(key), SIGN_IN=sign_in))
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, site))
    with contextlib.ExitStack() as cleanup:
        out = (prefix / "nginx.out").open("wb")
        cleanup.callback(out.close)
        proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        cleanup.callback(_keep_logs, prefix, logs)
        cleanup.callback(_stop, proc)  # runs first: nginx stops before its logs are copied
        deadline = time.monotonic() + NGINX_START_TIMEOUT_S
        while not _answers(https_port, tls):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                log = "".join(p.read_text(errors="replace") for p in (prefix / "nginx.out", prefix / "error.log")
                              if p.exists())
                pytest.fail(f"nginx did not answer on {origin} ({proc.returncode=}):\n{log[-5000:]}")
            time.sleep(0.1)
        yield Proxy(origin, https_port, http_port, upstream, tls, prefix / "access.log")


@pytest.fixture(scope="module")
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    _program("nginx")  # skip before starting anything
    with _streamlit(request, tmp_path_factory.mktemp("uploads"), SERVER_LOG) as upstream:
        https_port, http_port = free_ports(2)  # picked once Streamlit holds its own port, so that none clash
        with nginx_in_front(tmp_path_factory.mktemp("nginx"), upstream, https_port, http_port) as proxy:
            yield proxy


def _keep_logs(prefix: Path, logs: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("error.log", "access.log"):
        if (prefix / name).exists():
            shutil.copyfile(prefix / name, ARTIFACTS / f"{logs}-{name}")


def assert_security_headers(resp: http.client.HTTPResponse, where: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get_all(name) == [value], f"{where} ({resp.status}): {name} = {resp.headers.get_all(name)}"


def _static_asset(index_html: bytes) -> str:
    found = re.search(rb'src="\./(static/js/index\.[^"]+\.js)"', index_html)
    assert found, "no script in the index page"
    return "/" + found.group(1).decode()


@pytest.mark.slow
def test_security_headers_on_every_response(proxy: Proxy):
    resp, page = proxy.request("GET", "/")
    assert resp.status == 200 and b"<title>" in page
    assert_security_headers(resp, "/")

    asset = _static_asset(page)
    resp, body = proxy.request("GET", asset)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert body
    assert_security_headers(resp, asset)

    for path in ("/media/no-such-file.png", "/_stcore/metrics"):  # a 404 from Streamlit, then one from nginx
        resp, _ = proxy.request("GET", path)
        assert resp.status == 404, (path, resp.status)
        assert_security_headers(resp, path)

    resp, _ = proxy.request("PUT", "/_stcore/upload_file/s/f", {"Origin": FOREIGN}, b"x")
    assert resp.status == 403
    assert_security_headers(resp, "refused upload")

    resp, _ = proxy.request("GET", "/_stcore/health")
    assert_security_headers(resp, "/_stcore/health")


@pytest.mark.slow
def test_plain_http_redirects_to_https(proxy: Proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=30)
    try:
        conn.request("GET", "/saliency?method=smoothgrad&samples=16")
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 301
    assert resp.headers["Location"] == f"{proxy.origin}/saliency?method=smoothgrad&samples=16"
    assert_security_headers(resp, "redirect")


@pytest.mark.slow
def test_metrics_hidden_health_served(proxy: Proxy):
    with urllib.request.urlopen(f"{proxy.upstream}/_stcore/metrics", timeout=30) as direct:
        assert direct.status == 200 and b"# TYPE " in direct.read()  # the OpenMetrics text nginx must not show

    for spelling in ("/_stcore/metrics", "/_stcore/metrics/", "/_stcore/%6Detrics", "//_stcore//metrics",
                     "/static/../_stcore/metrics"):
        path = f"{spelling}?from=test_metrics_hidden"  # a line of its own in the access log
        resp, body = proxy.request("GET", path, {"Accept": "application/openmetrics-text"})
        assert resp.status == 404, (path, resp.status)
        assert b"# TYPE " not in body
        assert proxy.upstream_status(path) == "-", path

    resp, body = proxy.request("GET", "/_stcore/health")
    assert (resp.status, body.strip()) == (200, b"ok")


@pytest.mark.slow
def test_upload_from_a_foreign_origin_is_refused_by_nginx(proxy: Proxy):
    for method, origin, name in [("PUT", FOREIGN, "foreign"), ("DELETE", FOREIGN, "foreign-delete"),
                                 ("PUT", "null", "sandboxed"), ("PUT", proxy.origin.replace("https:", "http:"), "http"),
                                 ("OPTIONS", FOREIGN, "preflight")]:
        path = f"/_stcore/upload_file/session-{name}/file"
        resp, _ = proxy.request(method, path, {"Origin": origin, "Content-Type": "application/octet-stream"}, b"x")
        assert resp.status == 403, (method, origin, resp.status)
        assert proxy.upstream_status(path) == "-", f"{method} from {origin} reached the dashboard"

    # The site's own origin, and a client without Origin, reach Streamlit (which wants its XSRF token).
    for headers, name in [({"Origin": proxy.origin}, "own"), ({}, "no-origin")]:
        path = f"/_stcore/upload_file/session-{name}/file"
        resp, _ = proxy.request("PUT", path, headers, b"x")
        assert proxy.upstream_status(path) == str(resp.status), name


@pytest.mark.slow
def test_upload_larger_than_the_limit_is_refused_before_buffering(proxy: Proxy):
    limit = (max_upload_mb() + 1) * 1024 * 1024
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.https_port, context=proxy.tls, timeout=60)
    try:  # headers only: nginx answers from the Content-Length before any of the body is sent
        conn.putrequest("PUT", "/_stcore/upload_file/session-big/file")
        conn.putheader("Origin", proxy.origin)
        conn.putheader("Content-Length", str(limit + 1))
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 413
    assert_security_headers(resp, "413")
    assert proxy.upstream_status("/_stcore/upload_file/session-big/file") == "-"


def _handshake(proxy: Proxy, origin: str | None) -> int:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "streamlit"}
    if origin is not None:
        headers["Origin"] = origin
    resp, _ = proxy.request("GET", "/_stcore/stream", headers)
    return resp.status


@pytest.mark.slow
def test_websocket_handshake_checks_origin(proxy: Proxy):
    assert _handshake(proxy, FOREIGN) == 403
    assert proxy.upstream_status("/_stcore/stream") == "-"
    assert _handshake(proxy, proxy.origin) == 101  # the proxy passes the upgrade through to Streamlit


@pytest.mark.slow
@pytest.mark.browser
def test_dashboard_works_over_https_through_the_proxy(browser, proxy: Proxy):
    """Chromium on the proxy's HTTPS origin: the Saliency page runs (its WebSocket goes through nginx)
    and an upload (a PUT with the site's own Origin) shows its map."""
    context = browser.new_context(viewport=VIEWPORT, ignore_https_errors=True)
    try:
        page = context.new_page()
        context.set_default_timeout(COLD_WAIT_MS)
        js_errors: list[str] = []
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        page.goto(f"{proxy.origin}/saliency")
        wait_idle(page, COLD_WAIT_MS)
        wait_for_counts(page, {HEATMAP: 1, DATAFRAME: 1}, COLD_WAIT_MS)
        page.locator(UPLOAD_INPUT).wait_for(state="attached")
        upload(page, "rocket.png", png_bytes(photos()["rocket.png"]))
        wait_for_caption(page, "rocket.png", COLD_WAIT_MS)
        wait_idle(page, COLD_WAIT_MS)
        wait_for_counts(page, {HEATMAP: 1}, COLD_WAIT_MS)
        assert_healthy(SimpleNamespace(page=page, js_errors=js_errors), "through the proxy")
        assert page.evaluate("location.origin") == proxy.origin
        screenshot(page, "proxy-saliency-upload")
    finally:
        context.close()
    uploads = re.findall(r"^PUT /_stcore/upload_file/\S+ (\d+) upstream=(\S+)$", proxy.access_log.read_text(), re.M)
    assert ("204", "204") in uploads, uploads  # the browser's own upload, answered by Streamlit

