"""Stopping a computation whose session is gone, at its next step: the one place that asks Streamlit.

Streamlit runs each session's script in a thread of its own and does not end it when the browser goes:
a tab closed in the middle of a three-minute computation kept its compute slot, and the cores, to the end
(the security issue's probe). Streamlit stops a script only where the script hands it control: when it
sends an element, or asks the run's yield check. A computation inside the engine sends nothing for as long
as it runs (a batch of path points, a randomisation stage, a Gallery chunk), so the pages give the engine a
progress callback wrapped by :func:`checked`: at every step the engine reports (every chunk of rows), it
asks whether this session should go on and, if not, raises Streamlit's own stop or rerun exception. That
unwinds the computation like any error: the compute slot is released, the shared cache keeps nothing (a
session waiting for the same result computes it itself), and Streamlit ends the run quietly. The engine
never imports Streamlit: it only calls the callback it is given.

What this relies on in Streamlit 1.67 (``tests/app/test_session_gone.py`` pins each, so that an upgrade
that changes one fails loudly instead of letting work run on):

- ``get_script_run_ctx(suppress_warning=True)``: the script thread's ``ScriptRunContext`` (None on any
  other thread), with the ``session_id`` of its session;
- ``get_run_yield_check()``: that context's ``yield_check``, the script runner's
  ``_maybe_handle_execution_control_request``; it raises ``StopException`` when a stop is pending and
  ``RerunException`` when a rerun is (the user changed something), as sending an element does;
- a browser that leaves closes its WebSocket, and ``WebsocketSessionManager.disconnect_session`` then
  calls ``AppSession.request_script_stop()`` (the pending stop above) and drops the session from the
  active ones;
- ``Runtime.instance().is_active_session(session_id)``: False from then on. Checked too, so that the work
  stops even if a later Streamlit no longer requests the stop;
- ``StopException`` and ``RerunException`` derive from ``ScriptControlException``, a ``BaseException``:
  the engine's ``except Exception`` and ``except SaliencyError`` blocks let them through.
"""

from __future__ import annotations

from collections.abc import Callable

from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException, StopException
from streamlit.runtime.scriptrunner_utils.script_run_context import get_run_yield_check, get_script_run_ctx

#: What a computation stopped here raises (Streamlit's stop and rerun exceptions).
STOPPED = ScriptControlException

Progress = Callable[[int, int], None]


def stop_if_gone() -> None:
    """Raise Streamlit's stop (or rerun) exception when this session should not go on; else return.

    Outside a Streamlit script thread (a notebook, a unit test) there is no session to lose: nothing happens.
    """
    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None:
        return
    yield_check = get_run_yield_check()
    if yield_check is not None:
        yield_check()
    if Runtime.exists() and not Runtime.instance().is_active_session(ctx.session_id):
        raise StopException()


def checked(progress: Progress | None = None) -> Progress:
    """A progress callback for the engine that first stops the work when its session is gone
    (:func:`stop_if_gone`), then reports to ``progress`` (if any)."""

    def report(done: int, total: int) -> None:
        stop_if_gone()
        if progress is not None:
            progress(done, total)

    return report
