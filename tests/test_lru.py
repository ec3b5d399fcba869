"""saliency_core.serving.lru: the bounded cache that holds the dashboard's slow, progress-reporting results."""

from __future__ import annotations

import threading

import pytest

from saliency_core.serving.lru import LRUCache


def _counting(calls: list, value):
    def compute():
        calls.append(value)
        return value * 10

    return compute


def test_computes_once_per_key_and_evicts_the_least_recently_used():
    cache = LRUCache(max_entries=2)
    calls: list = []
    assert cache.get_or_compute(("a",), _counting(calls, 1)) == 10
    assert cache.get_or_compute(("a",), _counting(calls, 99)) == 10  # cached: not recomputed
    cache.get_or_compute(("b",), _counting(calls, 2))
    cache.get_or_compute(("a",), _counting(calls, 99))  # touch a: b is now the oldest
    cache.get_or_compute(("c",), _counting(calls, 3))  # evicts b
    assert ("a",) in cache and ("b",) not in cache and len(cache) == 2
    assert cache.get_or_compute(("a",), _counting(calls, 99)) == 10
    assert cache.get_or_compute(("b",), _counting(calls, 4)) == 40
    assert calls == [1, 2, 3, 4]


def test_many_threads_read_a_cached_value_without_recomputing_and_stay_bounded():
    cache = LRUCache(max_entries=4)
    for k in range(4):
        cache.get_or_compute(k, lambda k=k: k * k)
    calls: list = []
    start = threading.Barrier(16)
    seen: list = []

    def work(i: int) -> None:
        start.wait()
        for _ in range(200):
            seen.append(cache.get_or_compute(i % 4, _counting(calls, i)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == []  # every read was a hit
    assert sorted(set(seen)) == [0, 1, 4, 9]

    def fill(i: int) -> None:
        start.wait()
        for j in range(50):
            cache.get_or_compute((i, j), lambda: 0)

    threads = [threading.Thread(target=fill, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 4


def test_clear_forgets_and_a_bound_below_one_is_refused():
    cache = LRUCache(max_entries=1)
    cache.get_or_compute("k", lambda: 1)
    cache.clear()
    assert cache.get_or_compute("k", lambda: 2) == 2
    with pytest.raises(ValueError, match="max_entries"):
        LRUCache(max_entries=0)


def test_a_byte_bound_evicts_the_oldest_and_never_keeps_an_oversized_value():
    import numpy as np

    cache = LRUCache(max_entries=100, max_bytes=1000)
    for k in range(5):
        cache.get_or_compute(k, lambda: np.zeros(300, np.uint8))
    assert len(cache) == 3 and cache.nbytes == 900 and 0 not in cache and 4 in cache
    big = cache.get_or_compute("big", lambda: np.zeros(5000, np.uint8))
    assert big.nbytes == 5000 and "big" not in cache and cache.nbytes == 900


def test_approximate_bytes_counts_pixels_not_object_headers():
    import numpy as np
    from PIL import Image

    from saliency_core.serving.lru import approximate_bytes

    assert approximate_bytes(np.zeros((100, 100, 3), np.uint8)) == 30_000
    assert 30_000 <= approximate_bytes(Image.new("RGB", (100, 100))) < 31_000
    assert approximate_bytes({"a": np.zeros(10), "b": [np.zeros(5, np.uint8)]}) >= 85


def test_a_key_being_computed_is_computed_once_for_every_thread_that_asks():
    import threading
    import time

    cache = LRUCache(max_entries=4)
    calls, started = [], threading.Event()

    def slow() -> str:
        calls.append(1)
        started.set()
        time.sleep(0.2)
        return "map"

    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow))) for _ in range(5)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(5)
    assert results == ["map"] * 6 and len(calls) == 1


def test_when_the_computing_thread_fails_a_waiting_thread_computes_it_itself():
    import threading
    import time

    cache = LRUCache(max_entries=4)
    started = threading.Event()

    def fails() -> str:
        started.set()
        time.sleep(0.1)
        raise RuntimeError("the session moved on")

    errors: list[BaseException] = []

    def first() -> None:
        try:
            cache.get_or_compute("k", fails)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    started.wait(5)
    assert cache.get_or_compute("k", lambda: "recomputed") == "recomputed"
    t.join(5)
    assert len(errors) == 1 and cache.get_or_compute("k", lambda: "not again") == "recomputed"


def test_a_thread_waiting_for_another_threads_value_is_told_how_long_it_has_waited():
    cache = LRUCache(max_entries=4, poll_s=0.02)
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "map"

    first = threading.Thread(target=cache.get_or_compute, args=("k", slow))
    first.start()
    started.wait(5)
    waited: list[float] = []

    def on_wait(seconds: float) -> None:
        waited.append(seconds)
        if len(waited) == 5:
            release.set()

    assert cache.get_or_compute("k", lambda: "computed twice", on_wait) == "map"
    first.join(5)
    assert len(waited) >= 5 and waited == sorted(waited) and waited[0] < 0.1 and waited[-1] >= 0.06
    calls = len(waited)
    assert cache.get_or_compute("k", lambda: "not again", on_wait) == "map" and len(waited) == calls  # a hit


class MovedOn(BaseException):
    """Stands for Streamlit's rerun and stop exceptions (BaseExceptions), raised from a page update."""


def test_a_waiter_that_raises_from_on_wait_leaves_and_the_value_is_still_computed_once_and_kept():
    cache = LRUCache(max_entries=4, poll_s=0.02)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(5)
        return "map"

    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
    first.start()
    started.wait(5)
    patient_waits: list[float] = []
    patient = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow, patient_waits.append)))
    patient.start()

    def leave(seconds: float) -> None:
        if seconds > 0.05:
            raise MovedOn

    with pytest.raises(MovedOn):
        cache.get_or_compute("k", slow, leave)
    assert "k" not in cache and first.is_alive() and patient.is_alive()  # the others still wait for the value
    release.set()
    first.join(5), patient.join(5)
    assert results == ["map", "map"] and calls == [1] and patient_waits
    assert cache.get_or_compute("k", lambda: "not again") == "map"
