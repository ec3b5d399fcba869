"""How a page waits for a computation: its turn in the compute queue, or another session's identical one.

Both waits say on the page what is happening, and both are where a session
that moved on leaves: every poll asks :func:`pages.ui.session_gone.stop_if_gone`,
which raises Streamlit's rerun or stop exception once the user changed something
or closed the tab (as the waiting notice's next update would), so the wait ends
at once (the exception propagates out of :func:`queued` and
:func:`shared_or_computed`; the work of other sessions is not disturbed). The
computation itself stops the same way at its next step (:mod:`pages.ui.session_gone`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TypeVar

import streamlit as st

from pages.ui import timing_log
from pages.ui.session_gone import STOPPED, stop_if_gone
from saliency_core.serving.lru import LRUCache
from saliency_core.serving.work_queue import ComputeQueue, default_slots

T = TypeVar("T")
NOTICE_REFRESH_S = 5.0  # how often a waiting page's notice is sent again when nothing changed


def seconds_text(s: float) -> str:
    """A duration as people read it: "12 s", "3 min"."""
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


class WaitNotice:
    """An ``st.info`` that a waiting page keeps up to date, drawn where the page waits.

    :meth:`say` sends the text when ``state`` changes, else at most every
    :data:`NOTICE_REFRESH_S` seconds: each message re-renders the page in
    every waiting browser, and browsers already take most of a loaded
    machine's CPU (benchmarks/RESULTS.md, "Many users at once"); yet
    Streamlit only notices a session that moved on when one is sent.
    ``show=False`` draws nothing (inside an ``st.cache_data`` function, whose
    drawn elements would be replayed on every later cache hit).
    """

    def __init__(self, show: bool = True) -> None:
        self._show = show
        self._slot = None  # made at the first message: a computation that never waits draws nothing
        self._state: object = object()  # equal to no state given
        self._sent = 0.0

    def say(self, text: str, state: object = None) -> None:
        now = time.monotonic()
        if state == self._state and now - self._sent < NOTICE_REFRESH_S:
            return
        self._state, self._sent = state, now
        if self._show:
            if self._slot is None:
                self._slot = st.empty()
            self._slot.info(text, icon="⏳")

    def clear(self) -> None:
        if self._slot is not None:
            self._slot.empty()


# --------------------------------------------------------------------------- the compute queue

@st.cache_resource
def compute_queue() -> ComputeQueue:
    """The one queue in front of the model for every session (``SALIENCY_COMPUTE_SLOTS`` at once)."""
    return ComputeQueue(default_slots())


def queued(what: str, compute: Callable[[], T], *, show_wait: bool = True) -> T:
    """``compute()`` once a compute slot is free. While it waits, the page says how many requests are
    ahead; a session that moves on meanwhile leaves the queue (Streamlit's rerun or stop exception, from
    :func:`~pages.ui.session_gone.stop_if_gone`). Each computation's wait and duration go to
    :mod:`pages.ui.timing_log`, with ``"stopped"`` (the exception's name) for one stopped on the way.
    ``show_wait=False`` draws nothing: inside an ``st.cache_data`` function, whose drawn elements would be
    replayed on every later cache hit."""
    notice = WaitNotice(show_wait)

    def on_wait(ahead: int) -> None:
        stop_if_gone()
        notice.say(f"Waiting for the model: {ahead} request{'s' if ahead != 1 else ''} ahead of yours "
                   f"(at most {compute_queue().slots} computed at once on this server).", state=ahead)

    with compute_queue().slot(on_wait) as waited:
        notice.clear()
        start = time.perf_counter()
        try:
            value = compute()
        except STOPPED as exc:  # the session left (or reran) mid-computation: the slot is released on the way out
            timing_log.append({"what": what, "waited": round(waited, 4),
                               "seconds": round(time.perf_counter() - start, 4), "stopped": type(exc).__name__})
            raise
        seconds = time.perf_counter() - start
    timing_log.append({"what": what, "waited": round(waited, 4), "seconds": round(seconds, 4)})
    return value


# --------------------------------------------------------------------------- another session's computation

def shared_or_computed(cache: LRUCache, key: Hashable, compute: Callable[[], T], what: str = "result") -> T:
    """``cache.get_or_compute(key, compute)``; while another session computes the same ``key``, the page
    says that its ``what`` ("map") will be shared, and a session that moves on meanwhile stops waiting."""
    notice = WaitNotice()

    def on_wait(seconds: float) -> None:
        stop_if_gone()
        notice.say(f"Another session is computing this {what}; it will be shared with you… "
                   f"(waiting {seconds_text(seconds)})")

    def compute_here() -> T:  # nobody else is computing it (or their computation failed): this session does
        notice.clear()
        return compute()

    value = cache.get_or_compute(key, compute_here, on_wait)
    notice.clear()
    return value
