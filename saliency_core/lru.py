"""A small thread-safe least-recently-used cache, bounded by entries.

The dashboard keeps slow results that are computed with a progress bar
(faithfulness curves, randomisation checks) here: ``st.cache_data`` replays
the elements a cached function draws, so such a function can't be cached
with it. Every session of a server shares one instance.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class LRUCache(Generic[T]):
    """``get_or_compute(key, compute)``: the value cached for ``key``, else ``compute()`` stored.

    Holds at most ``max_entries`` values; the least recently used goes first.
    ``compute`` runs outside the lock, so other threads keep reading while a
    slow value is computed (two threads asking for the same new key at once
    may both compute it; the values are equal, the last one is kept).
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return value
