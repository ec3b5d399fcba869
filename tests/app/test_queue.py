"""The compute queue in the pages: a session waits its turn, says how many requests are ahead, then draws
its map; the timing log records the wait and the computation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from saliency_core.work_queue import ComputeQueue

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


def test_a_page_waits_for_a_busy_model_then_draws_and_logs_the_wait(new_app, monkeypatch, tmp_path: Path):
    from pages.ui import caches

    queue = RecordingQueue()
    monkeypatch.setattr(caches, "compute_queue", lambda: queue)
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


def test_slots_default_to_two_on_the_cpu(monkeypatch):
    from pages.ui import caches

    monkeypatch.delenv("SALIENCY_COMPUTE_SLOTS", raising=False)
    caches.compute_queue.clear()
    try:
        assert caches.compute_queue().slots == 2
    finally:
        caches.compute_queue.clear()
