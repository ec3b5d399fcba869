"""Work for a session that is gone stops at its next step (pages/ui/session_gone.py), and the Streamlit
internals that this relies on are pinned here: a Streamlit upgrade that changes one fails these tests
instead of silently letting a closed tab's computation run on for minutes.

The AppTest cases stop the session the way Streamlit's server does when a browser's WebSocket closes
(``request_stop`` on its script runner), from inside the first chunk of rows of a Gallery batch: before
the fix the batch ran to its end inside ``st.cache_data``, sending nothing Streamlit could stop it at.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.app.apptest import PAGES, assert_healthy, charts
from tests.app.test_queue import script_runners  # noqa: F401  (a fixture: the AppTest runs' script runners)

pytestmark = pytest.mark.usefixtures("upload_dir")


# --------------------------------------------------------------------------- Streamlit's side, pinned


def test_the_script_run_context_carries_the_session_id_and_the_runs_yield_check():
    from streamlit.runtime.scriptrunner_utils.script_run_context import (
        ScriptRunContext,
        get_run_yield_check,
        get_script_run_ctx,
    )

    fields = {f.name for f in dataclasses.fields(ScriptRunContext)}
    assert {"session_id", "yield_check"} <= fields
    assert get_script_run_ctx(suppress_warning=True) is None and get_run_yield_check() is None  # not a script


def test_streamlits_stop_and_rerun_get_through_the_engines_except_clauses():
    from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, ScriptControlException, StopException

    from pages.ui.session_gone import STOPPED

    assert STOPPED is ScriptControlException
    for exc in (StopException, RerunException):
        assert issubclass(exc, ScriptControlException) and not issubclass(exc, Exception)


def test_a_disconnected_session_is_asked_to_stop_and_is_no_longer_active():
    """What Streamlit's server does when a browser's WebSocket closes (``Runtime.disconnect_session``)."""
    from unittest import mock

    from streamlit.runtime import Runtime
    from streamlit.runtime import websocket_session_manager as wsm
    from streamlit.runtime.memory_session_storage import MemorySessionStorage

    assert callable(Runtime.is_active_session) and callable(Runtime.exists) and callable(Runtime.instance)
    manager = wsm.WebsocketSessionManager(MemorySessionStorage(), mock.MagicMock(), mock.MagicMock(), None)
    with mock.patch.object(wsm, "AppSession") as app_session:
        app_session.return_value.id = "gone"
        session_id = manager.connect_session(mock.MagicMock(), mock.MagicMock(), {})
    assert manager.is_active_session(session_id)
    manager.disconnect_session(session_id)
    app_session.return_value.request_script_stop.assert_called_once()
    assert not manager.is_active_session(session_id)


def test_outside_a_script_thread_the_check_lets_the_work_go_on():
    from pages.ui.session_gone import checked, stop_if_gone

    seen = []
    stop_if_gone()
    checked(lambda done, total: seen.append((done, total)))(1, 2)
    checked()(2, 2)
    assert seen == [(1, 2)]


# --------------------------------------------------------------------------- the pages' work stops


class Chunks:
    """The rows of each chunk of SmoothGrad's and Integrated Gradients' gradient passes, as they start;
    ``on_first`` runs when the first one starts."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.on_first = lambda: None


@pytest.fixture
def chunks(monkeypatch) -> Chunks:
    from saliency_core.methods import _common

    seen = Chunks()
    real = _common.forward_and_vjps

    def counting(module, X, *args, **kwargs):
        seen.sizes.append(int(X.shape[0]))
        if len(seen.sizes) == 1:
            seen.on_first()
        return real(module, X, *args, **kwargs)

    monkeypatch.setattr(_common, "forward_and_vjps", counting)
    return seen


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# Five sample photos x 16 noisy copies = 80 rows, in chunks of the Gallery's 32 or fewer where the pass memory
# budget allows fewer for a 224 px image (saliency_core.core.passes.rows_per_pass): several chunks either way.
GALLERY = {"method": "smoothgrad", "samples": "16"}


def _chunk_rows() -> int:
    import torch

    from saliency_core.core.passes import row_bytes, rows_per_pass

    return min(32, rows_per_pass(row_bytes((3, 224, 224), torch.float32), torch.device("cpu")))


def _all_chunks(rows: int = 80) -> list[int]:
    size = _chunk_rows()
    return [min(size, rows - start) for start in range(0, rows, size)]


def test_a_gallery_batch_stops_at_its_next_chunk_when_its_session_is_gone(
        new_app, chunks, script_runners, monkeypatch, tmp_path):  # noqa: F811
    from pages.ui import waiting

    log = tmp_path / "timing.jsonl"
    monkeypatch.setenv("SALIENCY_TIMING_LOG", str(log))
    chunks.on_first = lambda: script_runners[-1].request_stop()  # the tab closes during the first chunk
    at = new_app(PAGES["gallery"], seed="51", **GALLERY).run()
    assert not at.exception and not charts(at), "the session stopped"
    first = _chunk_rows()
    assert len(_all_chunks()) > 1  # else stopping "at the next chunk" would prove nothing
    assert chunks.sizes == [first], f"the batch ran on after its session was gone: chunks of {chunks.sizes} rows"
    assert waiting.compute_queue().state().running == 0, "its compute slot is free"
    stopped = [r for r in _records(log) if r.get("stopped")]
    assert [(r["what"], r["stopped"]) for r in stopped] == [("gallery", "StopException")]

    again = new_app(PAGES["gallery"], seed="51", **GALLERY).run()  # nothing was left half-done or locked
    assert_healthy(again)
    assert "gallery_0" in charts(again) and chunks.sizes == [first, *_all_chunks()], "computed in full, not cached"


def test_the_work_stops_when_streamlit_no_longer_lists_the_session_as_active(new_app, chunks, monkeypatch):
    """The second check: even without a stop request, a session the runtime has dropped does not compute on."""
    from pages.ui import session_gone

    class Gone:
        @staticmethod
        def exists() -> bool:
            return True

        @staticmethod
        def instance():
            return Gone()

        def is_active_session(self, session_id: str) -> bool:
            return False

    chunks.on_first = lambda: monkeypatch.setattr(session_gone, "Runtime", Gone)
    at = new_app(PAGES["gallery"], seed="52", **GALLERY).run()
    assert not at.exception and not charts(at)
    assert chunks.sizes == [_chunk_rows()]
