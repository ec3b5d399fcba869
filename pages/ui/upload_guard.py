"""Uploads are kept only for sessions the sign-in gate let in, and freed when the session's tab goes.

Streamlit accepts ``PUT /_stcore/upload_file/<session>/<file>`` from anyone
holding a live session's id (sent to the browser on the WebSocket) and the
page's XSRF cookie, signed in or not, and keeps the bytes in memory until
the session is shut down: after a tab closes, its session is stored for
``server.disconnectedSessionTTL`` (120 s) for a reconnect, and its files
go only when that session object is garbage collected. With sign-in on, a
visitor who never signs in could so fill the server's memory (40 x 19 MB
stayed for more than a minute after the tab closed).

:func:`admit` is called by the gate (``pages/ui/access.py``) on every run,
with its decision for the session. On first use it installs, once per
process, two wrappers on the running server's objects (instances, not
classes; safe to run again):

- ``runtime.uploaded_file_mgr.add_file(session_id, file)`` refuses (HTTP
  403) a file for a session the gate has not let in on its latest run, or
  that is no longer connected;
- ``runtime.disconnect_session(session_id, ...)`` frees the session's files
  once it is no longer connected. A session that reconnects within the TTL
  keeps its state; its image comes back from the upload store by sha256
  (``image_sources``), so nothing is lost but the bytes.

Streamlit internals relied on (1.67, Starlette server), each pinned by
``tests/app/test_browser_sign_in.py``, which fails loudly if an upgrade
changes them: the upload route calls ``add_file`` on the runtime's
``uploaded_file_mgr`` on the event loop, after reading the body, and turns
a raised ``HTTPException`` into its status; the WebSocket handler calls
``runtime.disconnect_session`` when the connection ends, on the same loop;
``is_active_session`` says whether a session is connected. The gate runs on
every run of every session (a page that runs alone is rerun through
``dashboard.py`` before it draws anything), so an uploader is never shown
to a session before its gate decision. In ``AppTest`` the runtime is a mock:
nothing is installed and :func:`admit` does nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

_LOG = logging.getLogger(__name__)
_ATTR = "_saliency_upload_guard"  # set on the runtime instance: the guard, installed once
_INSTALL_LOCK = threading.Lock()
REFUSED = "Sign in before uploading: this session is not signed in."


class _Guard:
    """Which sessions may upload: session id -> None while admitted and connected, or when it disconnected.

    A disconnected session keeps its entry for the TTL in which Streamlit may
    resume it (plus a minute), so a reconnected tab can upload before its next run.
    """

    def __init__(self, rt, grace_s: float) -> None:
        self._rt = rt
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._admitted: dict[str, float | None] = {}

    def admit(self, session_id: str, allowed: bool) -> None:
        with self._lock:
            if allowed:
                self._admitted[session_id] = None
                return
            self._admitted.pop(session_id, None)
        # Not let in (any more: signed out, or a sign-out in another tab): nothing it uploaded is kept.
        self._rt.uploaded_file_mgr.remove_session_files(session_id)

    def may_upload(self, session_id: str) -> bool:
        with self._lock:
            admitted = session_id in self._admitted
        return admitted and self._rt.is_active_session(session_id)

    def disconnected(self, session_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            if session_id in self._admitted:
                self._admitted[session_id] = now
            stale = [s for s, t in self._admitted.items() if t is not None and now - t > self._grace_s]
        for s in stale:
            if not self._rt.is_active_session(s):
                with self._lock:
                    self._admitted.pop(s, None)


def _real_runtime():
    """The running server's Runtime; None under AppTest (a mock) or outside a server."""
    from streamlit.runtime import Runtime

    if not runtime.exists():
        return None
    rt = runtime.get_instance()
    return rt if issubclass(type(rt), Runtime) else None  # a MagicMock(spec=Runtime) is not a subclass


def _refusal() -> Exception:
    try:
        from starlette.exceptions import HTTPException
    except ImportError:  # pragma: no cover - Streamlit before its Starlette server: the upload fails with a 500
        return PermissionError(REFUSED)
    return HTTPException(status_code=403, detail=REFUSED)


def install(rt) -> _Guard | None:
    """Wrap ``rt``'s upload manager and disconnect once; the guard (None if Streamlit no longer fits, logged)."""
    guard = getattr(rt, _ATTR, None)
    if guard is not None:
        return guard
    with _INSTALL_LOCK:
        guard = getattr(rt, _ATTR, None)
        if guard is not None:
            return guard
        mgr = getattr(rt, "uploaded_file_mgr", None)
        needed = [(mgr, "add_file"), (mgr, "remove_session_files"), (rt, "disconnect_session"),
                  (rt, "is_active_session")]
        missing = [name for obj, name in needed if not callable(getattr(obj, name, None))]
        if missing:
            _LOG.error("uploads are NOT limited to signed-in sessions: this Streamlit has no %s "
                       "(pages/ui/upload_guard.py needs updating)", ", ".join(missing))
            return None
        from streamlit import config

        guard = _Guard(rt, float(config.get_option("server.disconnectedSessionTTL") or 0) + 60)
        add_file, disconnect_session = mgr.add_file, rt.disconnect_session

        def guarded_add_file(session_id, file, *args, **kwargs):
            if not guard.may_upload(session_id):
                _LOG.warning("refused an upload into session %s: not let in by the sign-in gate", session_id)
                raise _refusal()
            return add_file(session_id, file, *args, **kwargs)

        def disconnect_and_free(session_id, *args, **kwargs):
            try:
                return disconnect_session(session_id, *args, **kwargs)
            finally:
                if not rt.is_active_session(session_id):  # not a stale socket of a session that reconnected
                    mgr.remove_session_files(session_id)
                    guard.disconnected(session_id)

        mgr.add_file = guarded_add_file
        rt.disconnect_session = disconnect_and_free
        setattr(rt, _ATTR, guard)
        return guard


def admit(allowed: bool) -> None:
    """Record the gate's decision for this run's session: may it upload? Installs the wrappers on first use."""
    rt = _real_runtime()
    ctx = get_script_run_ctx()
    if rt is None or ctx is None:
        return
    guard = install(rt)
    if guard is not None:
        guard.admit(ctx.session_id, allowed)
