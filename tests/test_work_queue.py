"""The compute queue: first come first served, at most ``slots`` at once, positions reported, cancellation."""

from __future__ import annotations

import threading
import time

import pytest

from saliency_core.errors import InvalidInputError
from saliency_core.serving.work_queue import ComputeQueue, QueueState, default_slots


def _wait_until(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_waiters_run_in_arrival_order_and_see_how_many_are_ahead():
    q = ComputeQueue(slots=1, poll_s=0.01)
    release = threading.Event()
    order: list[str] = []
    seen: dict[str, list[int]] = {}

    def holder() -> None:
        with q.slot():
            order.append("A")
            release.wait()

    def waiter(name: str) -> None:
        with q.slot(on_wait=lambda ahead: seen.setdefault(name, []).append(ahead)):
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    _wait_until(lambda: q.state().running == 1)
    for i, name in enumerate("BCD"):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        _wait_until(lambda i=i: q.state().waiting == i + 1)
    _wait_until(lambda: all(n in seen for n in "BCD"))
    assert (seen["B"][0], seen["C"][0], seen["D"][0]) == (1, 2, 3)  # the running one counts as ahead
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["A", "B", "C", "D"]
    assert q.state() == QueueState(running=0, waiting=0, slots=1)


def test_never_more_than_the_slots_at_once():
    q = ComputeQueue(slots=2, poll_s=0.01)
    lock = threading.Lock()
    now, peak = [0], [0]

    def work() -> None:
        with q.slot():
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(0.03)
            with lock:
                now[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == 2 and q.state().running == 0 and q.state().waiting == 0


class MovedOn(Exception):
    """Stands for Streamlit's rerun exception, raised from a page call when the user leaves."""


def test_a_request_whose_session_moved_on_leaves_the_queue_and_the_next_moves_up():
    q = ComputeQueue(slots=1, poll_s=0.01)
    release, leave = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    ahead_of_d: list[int] = []

    def holder() -> None:
        with q.slot():
            release.wait()

    def impatient() -> None:
        def on_wait(ahead: int) -> None:
            if leave.is_set():
                raise MovedOn
        try:
            with q.slot(on_wait=on_wait):
                pytest.fail("a cancelled request must never run")
        except MovedOn as exc:
            errors.append(exc)

    def patient() -> None:
        with q.slot(on_wait=ahead_of_d.append):
            pass

    a, c, d = threading.Thread(target=holder), threading.Thread(target=impatient), threading.Thread(target=patient)
    a.start()
    _wait_until(lambda: q.state().running == 1)
    c.start()
    _wait_until(lambda: q.state().waiting == 1)
    d.start()
    _wait_until(lambda: 2 in ahead_of_d)
    leave.set()
    c.join(5)
    assert len(errors) == 1 and q.state().waiting == 1
    _wait_until(lambda: ahead_of_d[-1] == 1)  # C left: only the running one is ahead of D now
    release.set()
    a.join(5), d.join(5)
    assert not d.is_alive() and q.state().running == 0 and q.state().waiting == 0


def test_the_wait_is_reported_and_a_free_slot_is_taken_at_once():
    q = ComputeQueue(slots=1)
    calls: list[int] = []
    with q.slot(on_wait=calls.append) as waited:
        assert waited < 0.1 and calls == []  # nothing ahead: no waiting message at all


def test_slots_come_from_the_setting_or_the_gpus():
    assert default_slots({}, cuda_devices=0) == 2
    assert default_slots({}, cuda_devices=4) == 4
    assert default_slots({"SALIENCY_COMPUTE_SLOTS": "3"}, cuda_devices=0) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(InvalidInputError, match="SALIENCY_COMPUTE_SLOTS"):
            default_slots({"SALIENCY_COMPUTE_SLOTS": bad}, cuda_devices=0)
    with pytest.raises(InvalidInputError, match="slots"):
        ComputeQueue(slots=0)
