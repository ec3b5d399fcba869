"""pages/ui/upload_guard.py on Streamlit's real upload manager and a stand-in runtime (no server).

``tests/app/test_browser_sign_in.py`` replays the attacks against a running
server; these pin the bookkeeping: installed once, refusals, what is freed
when, and nothing installed under AppTest.
"""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from pages.ui import upload_guard


class FakeRuntime:
    """What the guard uses of streamlit.runtime.Runtime: the upload manager and the session's connection."""

    def __init__(self) -> None:
        self.uploaded_file_mgr = MemoryUploadedFileManager("/_stcore/upload_file")
        self.active: set[str] = set()
        self.disconnects: list[tuple[str, object]] = []

    def is_active_session(self, session_id: str) -> bool:
        return session_id in self.active

    def disconnect_session(self, session_id: str, *, client=None) -> None:
        self.disconnects.append((session_id, client))
        if client in (None, "current"):
            self.active.discard(session_id)


def rec(file_id: str, size: int = 10) -> UploadedFileRec:
    return UploadedFileRec(file_id=file_id, name="x.png", type="image/png", data=b"\0" * size)


def held(rt: FakeRuntime, session_id: str) -> int:
    return sum(len(f.data) for f in rt.uploaded_file_mgr.file_storage.get(session_id, {}).values())


@pytest.fixture
def rt() -> FakeRuntime:
    rt = FakeRuntime()
    rt.active.update({"s1", "s2"})
    return rt


def test_installed_once_however_often_it_runs(rt):
    guard = upload_guard.install(rt)
    add_file, disconnect = rt.uploaded_file_mgr.add_file, rt.disconnect_session
    assert upload_guard.install(rt) is guard
    assert (rt.uploaded_file_mgr.add_file, rt.disconnect_session) == (add_file, disconnect)
    guard.admit("s1", True)
    rt.uploaded_file_mgr.add_file("s1", rec("f"))
    assert held(rt, "s1") == 10  # stored once, through one wrapper


def test_only_a_session_the_gate_let_in_may_upload(rt):
    guard = upload_guard.install(rt)
    with pytest.raises(HTTPException) as refused:
        rt.uploaded_file_mgr.add_file("s1", rec("f"))  # the gate has not run for it
    assert refused.value.status_code == 403 and "Sign in" in refused.value.detail
    guard.admit("s2", False)
    with pytest.raises(HTTPException):
        rt.uploaded_file_mgr.add_file("s2", rec("f"))  # the gate refused it
    guard.admit("s1", True)
    rt.uploaded_file_mgr.add_file("s1", rec("f"))
    assert held(rt, "s1") == 10 and held(rt, "s2") == 0


def test_a_session_that_disconnected_while_its_upload_was_read_keeps_nothing(rt):
    guard = upload_guard.install(rt)
    guard.admit("s1", True)
    rt.active.discard("s1")  # gone between Streamlit's session check and the end of the body
    with pytest.raises(HTTPException):
        rt.uploaded_file_mgr.add_file("s1", rec("f"))


def test_a_closed_sessions_files_are_freed_at_once(rt):
    guard = upload_guard.install(rt)
    guard.admit("s1", True)
    guard.admit("s2", True)
    rt.uploaded_file_mgr.add_file("s1", rec("a"))
    rt.uploaded_file_mgr.add_file("s2", rec("b"))
    rt.disconnect_session("s1", client="current")
    assert rt.disconnects == [("s1", "current")]  # Streamlit's own disconnect still runs
    assert held(rt, "s1") == 0 and held(rt, "s2") == 10


def test_the_old_socket_of_a_session_that_reconnected_frees_nothing(rt):
    guard = upload_guard.install(rt)
    guard.admit("s1", True)
    rt.uploaded_file_mgr.add_file("s1", rec("a"))
    rt.disconnect_session("s1", client="an old socket")  # Streamlit ignores it: the session has a new client
    assert held(rt, "s1") == 10


def test_a_reconnected_session_may_upload_before_its_next_run(rt):
    guard = upload_guard.install(rt)
    guard.admit("s1", True)
    rt.disconnect_session("s1")
    rt.active.add("s1")  # resumed by Streamlit within its TTL
    rt.uploaded_file_mgr.add_file("s1", rec("a"))
    assert held(rt, "s1") == 10


def test_sessions_gone_for_longer_than_the_ttl_are_forgotten(rt, monkeypatch):
    guard = upload_guard.install(rt)
    now = [1000.0]
    monkeypatch.setattr(upload_guard.time, "monotonic", lambda: now[0])
    guard.admit("s1", True)
    guard.admit("s2", True)
    rt.disconnect_session("s1")
    now[0] += guard._grace_s + 1
    rt.disconnect_session("s2")  # forgetting happens on a disconnect
    assert "s1" not in guard._admitted and "s2" in guard._admitted


def test_refused_after_being_let_in_drops_what_it_uploaded(rt):
    guard = upload_guard.install(rt)
    guard.admit("s1", True)
    rt.uploaded_file_mgr.add_file("s1", rec("a"))
    guard.admit("s1", False)  # signed out (here or in another tab)
    assert held(rt, "s1") == 0


def test_a_streamlit_without_what_the_guard_needs_is_logged_not_guessed(caplog):
    class Changed:
        uploaded_file_mgr = object()

        def is_active_session(self, session_id):
            return True

    assert upload_guard.install(Changed()) is None
    assert "NOT limited to signed-in sessions" in caplog.text and "add_file" in caplog.text


def test_nothing_is_installed_under_apptest(new_app, monkeypatch):
    """AppTest's runtime is a MagicMock(spec=Runtime): admit() leaves it alone, and the app runs."""
    installs = []
    monkeypatch.setattr(upload_guard, "install", lambda rt: installs.append(rt))
    at = new_app().run()
    assert not at.exception
    assert installs == []
