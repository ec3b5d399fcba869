"""Waiting in the pages: a session waits its turn in the compute queue, says how many requests are ahead,
then draws its map (the timing log records the wait and the computation); a session asking for a map
another session is computing says so and takes that map. A session that moves on while it waits leaves:
Streamlit raises its stop (or rerun) exception from the waiting notice's next update, as it does from
any element a session sends after ``request_stop`` / ``request_rerun``, and nobody else's work is lost."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from saliency_core.serving.work_queue import ComputeQueue

pytestmark = pytest.mark.usefixtures("upload_dir")


class RecordingQueue(ComputeQueue):
    def __init__(self) -> None:
        super().__init__(slots=1, poll_s=0.05)
        self.seen: list[int] = []

    def slot(self, on_wait=None):
        def record(ahead: int) -> None:
            self.seen.append(ahead)
            if on_wait is not None:
                on_wait(ahead)
        return super().slot(record)


def _wait_until(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture
def script_runners(monkeypatch):
    """The script runner of every AppTest run started in the test, in order: another thread can then do what
    Streamlit's server does when a user closes the tab (``request_stop``) while the script is waiting."""
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    started: list = []
    run = LocalScriptRunner.run

    def recording(self, *args, **kwargs):
        started.append(self)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(LocalScriptRunner, "run", recording)
    return started


def shows(runner, text: str) -> bool:
    """Whether a running script has sent an element containing ``text`` so far."""
    return any(text in str(msg) for msg in list(runner.forward_msgs()))


@pytest.fixture
def analyse_calls(monkeypatch) -> list[int]:
    """One entry per call of the pages' analysis (the model's forward and backward passes)."""
    from saliency_core.evaluation import analysis

    calls: list[int] = []
    real = analysis.analyse

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "analyse", counting)
    return calls


def test_a_page_waits_for_a_busy_model_then_draws_and_logs_the_wait(new_app, monkeypatch, tmp_path: Path):
    from pages.ui import waiting

    queue = RecordingQueue()
    monkeypatch.setattr(waiting, "compute_queue", lambda: queue)
    log = tmp_path / "timing.jsonl"
    monkeypatch.setenv("SALIENCY_TIMING_LOG", str(log))
    held, release = threading.Event(), threading.Event()

    def other_session() -> None:
        with queue.slot():
            held.set()
            release.wait(10)

    other = threading.Thread(target=other_session)
    other.start()
    held.wait(5)

    def release_once_waited_on() -> None:  # the other session finishes half a second after this one queued
        end = time.monotonic() + 60
        while not queue.seen and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.5)
        release.set()

    threading.Thread(target=release_once_waited_on).start()
    # A target no other test asks for, so the map is not in the shared cache yet.
    at = new_app(page="pages/saliency.py", target="3").run()
    other.join(5)
    assert not at.exception and not at.error
    assert queue.seen and queue.seen[0] == 1  # one request (the other session's) was ahead
    assert at.get("plotly_chart"), "the map is drawn once the slot is free"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    analysis = [r for r in records if r["what"] == "analysis"]
    assert analysis and analysis[0]["waited"] >= 0.5 and analysis[0]["seconds"] > 0
    assert queue.state().running == 0 and queue.state().waiting == 0


def test_a_session_that_moves_on_while_queued_leaves_the_queue_and_the_slot_is_not_lost(
        new_app, monkeypatch, script_runners, analyse_calls):
    from pages.ui import waiting

    queue = RecordingQueue()
    monkeypatch.setattr(waiting, "compute_queue", lambda: queue)
    monkeypatch.setattr(waiting, "NOTICE_REFRESH_S", 0.05)  # the notice's next update comes soon
    held, release = threading.Event(), threading.Event()

    def other_session() -> None:
        with queue.slot():
            held.set()
            release.wait(60)

    other = threading.Thread(target=other_session)
    other.start()
    held.wait(5)

    def close_the_tab_once_waiting() -> None:
        _wait_until(lambda: script_runners and shows(script_runners[0], "Waiting for the model"))
        script_runners[0].request_stop()

    closer = threading.Thread(target=close_the_tab_once_waiting)
    closer.start()
    try:
        at = new_app(page="pages/saliency.py", target="4").run()  # a target no other test asks for
        closer.join(5)
        assert not at.exception and not at.get("plotly_chart"), "the session stopped while it waited"
        assert queue.state().waiting == 0 and queue.state().running == 1, "it left the queue; the other still runs"
        assert analyse_calls == []
    finally:
        release.set()
        other.join(5)
    waits = len(queue.seen)
    at = new_app(page="pages/saliency.py", target="4").run()
    assert not at.exception and not at.error
    assert at.get("plotly_chart"), "the next request ran: no slot was lost to the session that left"
    assert len(queue.seen) == waits and analyse_calls == [1], "it ran at once, and computed the map"
    assert queue.state().running == 0 and queue.state().waiting == 0


def _held_by_another_session(new_app, monkeypatch, target: str):
    """Find the cache key and the map of the saliency page for ``target``, forget the map, and start a thread
    that computes that key as another session would, holding it until ``release`` is set.

    Returns (cache, key, value, release, the thread)."""
    from pages.ui import caches

    asked: list = []
    real = caches.shared_or_computed

    def recording(cache, key, compute, what="result"):
        value = real(cache, key, compute, what)
        if key[0] == "analysis":
            asked.append((cache, key, value))
        return value

    monkeypatch.setattr(caches, "shared_or_computed", recording)
    assert new_app(page="pages/saliency.py", target=target).run().get("plotly_chart")
    monkeypatch.setattr(caches, "shared_or_computed", real)
    ((cache, key, value),) = asked
    cache.clear()
    started, release = threading.Event(), threading.Event()

    def compute() -> object:
        started.set()
        release.wait(60)
        return value

    other = threading.Thread(target=cache.get_or_compute, args=(key, compute))
    other.start()
    started.wait(5)
    return cache, key, value, release, other


SHARED = "Another session is computing this map"


def test_a_session_asking_for_a_map_another_is_computing_says_so_and_gets_that_map(
        new_app, monkeypatch, script_runners, analyse_calls):
    from tests.app.apptest import heatmap_z

    _, _, value, release, other = _held_by_another_session(new_app, monkeypatch, "5")
    del analyse_calls[:]
    noticed = threading.Event()

    def release_once_shown() -> None:
        _wait_until(lambda: len(script_runners) == 2 and shows(script_runners[1], SHARED))
        noticed.set()
        release.set()

    releaser = threading.Thread(target=release_once_shown)
    releaser.start()
    try:
        at = new_app(page="pages/saliency.py", target="5").run()
    finally:
        release.set()
        releaser.join(5), other.join(5)
    assert noticed.is_set(), "the page said that another session was computing its map"
    assert not at.exception and not at.error
    assert analyse_calls == [], "the other session's map was taken, not computed again"
    np.testing.assert_array_equal(heatmap_z(at), value.maps["score"])
    assert not [i for i in at.info if SHARED in i.value], "the notice is gone once the map is drawn"


def test_a_session_that_moves_on_while_another_computes_its_map_stops_waiting_and_the_map_is_kept(
        new_app, monkeypatch, script_runners, analyse_calls):
    from pages.ui import waiting

    monkeypatch.setattr(waiting, "NOTICE_REFRESH_S", 0.05)
    cache, key, value, release, other = _held_by_another_session(new_app, monkeypatch, "6")
    del analyse_calls[:]

    def close_the_tab_once_shown() -> None:
        _wait_until(lambda: len(script_runners) == 2 and shows(script_runners[1], SHARED))
        script_runners[1].request_stop()

    closer = threading.Thread(target=close_the_tab_once_shown)
    closer.start()
    try:
        at = new_app(page="pages/saliency.py", target="6").run()
        closer.join(5)
        assert not at.exception and not at.get("plotly_chart"), "the session stopped while it waited"
        assert other.is_alive() and key not in cache, "the other session is still computing"
    finally:
        release.set()
        other.join(5)
    assert cache.get_or_compute(key, lambda: "computed again") is value, "the other session's map was kept"
    at = new_app(page="pages/saliency.py", target="6").run()
    assert not at.exception and not at.error and at.get("plotly_chart") and analyse_calls == []


def test_slots_default_to_two_on_the_cpu(monkeypatch):
    from pages.ui import waiting

    monkeypatch.delenv("SALIENCY_COMPUTE_SLOTS", raising=False)
    waiting.compute_queue.clear()
    try:
        assert waiting.compute_queue().slots == 2
    finally:
        waiting.compute_queue.clear()
