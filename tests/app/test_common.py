"""The bounded result cache used for slow, progress-reporting computations."""

from __future__ import annotations

import threading

from pages.common import _LRU


def test_computes_once_per_key_and_evicts_the_least_recently_used():
    cache = _LRU(max_entries=2)
    calls = []

    def make(v):
        def compute():
            calls.append(v)
            return v * 10

        return compute

    assert cache.get_or_compute(("a",), make(1)) == 10
    assert cache.get_or_compute(("a",), make(99)) == 10  # cached: not recomputed
    cache.get_or_compute(("b",), make(2))
    cache.get_or_compute(("a",), make(99))  # touch a: b is now the oldest
    cache.get_or_compute(("c",), make(3))  # evicts b
    assert cache.get_or_compute(("a",), make(99)) == 10
    assert cache.get_or_compute(("b",), make(4)) == 40
    assert calls == [1, 2, 3, 4]


def test_threads_get_consistent_values():
    cache = _LRU(max_entries=8)
    results = []

    def work(i):
        results.append(cache.get_or_compute((i % 4,), lambda: (i % 4) ** 2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(results)) == [0, 1, 4, 9]
