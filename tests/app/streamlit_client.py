"""A bare Streamlit client for tests: what a script, not a browser, can do with a running dashboard.

It does what a hostile probe did: fetch the XSRF cookie Streamlit gives
anyone (``/_stcore/health`` sets it), open the session's WebSocket with the
token as its second subprotocol, ask for a run, read the session id from
the ``new_session`` message, and PUT files to
``/_stcore/upload_file/<session>/<file>``; and it reads how many uploaded
bytes the server holds from ``/_stcore/metrics``. Any cookies given (an
identity cookie copied from a signed-in browser) go with every request.

Every wait is bounded on its own; nothing depends on speed.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import time
import uuid
from urllib.parse import urlsplit

UPLOAD_METRIC = re.compile(r'^cache_memory_bytes\{cache_type="UploadedFileManager"[^}]*\}\s+(\d+)', re.M)
# Streamlit 1.67 computes the cache_memory_bytes family at most once per 5 s and serves that answer
# meanwhile (streamlit/web/server/starlette/starlette_routes.py); a read sooner after the previous one could
# see bytes from before an upload, or before a removal.
try:
    from streamlit.web.server.starlette.starlette_routes import _METRICS_EXPENSIVE_STATS_TTL_SECONDS as METRICS_TTL_S
except ImportError:  # another Streamlit: assume the same window
    METRICS_TTL_S = 5.0
_last_read: dict[str, float] = {}


def _conn(base_url: str, timeout: float) -> http.client.HTTPConnection:
    u = urlsplit(base_url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def uploaded_bytes(base_url: str) -> int:
    """The bytes of uploaded files the server holds now, from its metrics (0 when it holds none).

    Waits until the previous read's cached answer has expired, so the number is computed for this call.
    """
    wait = _last_read.get(base_url, float("-inf")) + METRICS_TTL_S + 0.2 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    _last_read[base_url] = time.monotonic()
    conn = _conn(base_url, 60)
    try:
        conn.request("GET", "/_stcore/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 200, resp.status
    return sum(int(n) for n in UPLOAD_METRIC.findall(text))


def wait_for_uploaded_bytes(base_url: str, ok, timeout_s: float) -> int:
    """Poll the metrics until ``ok(bytes)`` or ``timeout_s``; the last value read."""
    deadline = time.monotonic() + timeout_s
    while True:
        n = uploaded_bytes(base_url)
        if ok(n) or time.monotonic() > deadline:
            return n
        time.sleep(0.5)


class Client:
    """One session of a running dashboard, driven over its WebSocket (``with Client(url) as c: ...``)."""

    def __init__(self, base_url: str, cookies: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.cookies = dict(cookies or {})
        self.session_id: str | None = None
        self._stack = contextlib.ExitStack()
        self._ws = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def open(self, run_timeout_s: float) -> str:
        """Get the XSRF cookie, connect, ask for one run and wait (``run_timeout_s``) until it and the reruns it
        asks for end; the session id."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from websockets.sync.client import connect

        conn = _conn(self.base_url, 60)
        try:
            conn.request("GET", "/_stcore/health", headers={"Cookie": self._cookie_header()})
            resp = conn.getresponse()
            resp.read()
            for name, value in resp.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key] = rest.split(";", 1)[0]
        finally:
            conn.close()
        xsrf = self.cookies["_streamlit_xsrf"]  # the test fails here if Streamlit stops setting it there
        netloc = urlsplit(self.base_url).netloc
        self._ws = self._stack.enter_context(connect(
            f"ws://{netloc}/_stcore/stream", subprotocols=["streamlit", xsrf], origin=self.base_url,
            additional_headers={"Cookie": self._cookie_header()}, max_size=None, open_timeout=60))
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        self._ws.send(rerun.SerializeToString())
        deadline = time.monotonic() + run_timeout_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the session's first run did not end within {run_timeout_s} s"
            msg = ForwardMsg()
            msg.ParseFromString(self._ws.recv(timeout=left))
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                self.session_id = msg.new_session.initialize.session_id
            elif (kind == "script_finished" and self.session_id
                  and msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN):
                # A run that ends early for a rerun (the gate opening the page a sign-in came back to) is
                # followed by another; Streamlit drops files no widget holds when a run ends, so an upload
                # sent before the last run ends would be dropped by it.
                return self.session_id

    def upload(self, size: int, session_id: str | None = None) -> int:
        """PUT one file of ``size`` bytes into the session (or ``session_id``) as the uploader does; the status."""
        sid = session_id or self.session_id
        boundary = "----saliency-test-" + uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"probe.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        body = head + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
        conn = _conn(self.base_url, 120)
        try:
            conn.request("PUT", f"/_stcore/upload_file/{sid}/{uuid.uuid4()}", body=body, headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "X-Xsrftoken": self.cookies["_streamlit_xsrf"], "Cookie": self._cookie_header()})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def close(self) -> None:
        """Close the WebSocket, as a closed tab does."""
        self._ws = None
        self._stack.close()
