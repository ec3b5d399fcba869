"""A small thread-safe least-recently-used cache, bounded by entries and, optionally, by bytes.

The dashboard keeps here what must not grow without limit on a shared server:
slow results computed with a progress bar (``st.cache_data`` replays the
elements a cached function draws, so such a function can't be cached with
it), and decoded uploads, whose size depends on what people upload. Every
session of a server shares one instance.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


def approximate_bytes(value: object) -> int:
    """Memory held by ``value``: numpy arrays and PIL images by their pixel buffers, containers summed.

    Dataclass-like objects count their attributes. An estimate for bounding a
    cache, not an exact ``tracemalloc`` figure.
    """
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    size_of_image = getattr(value, "size", None)
    mode = getattr(value, "mode", None)
    if isinstance(size_of_image, tuple) and isinstance(mode, str):  # a PIL image
        return size_of_image[0] * size_of_image[1] * max(1, len(getattr(value, "getbands", lambda: "RGB")())) + 256
    if isinstance(value, dict):
        return sum(approximate_bytes(v) for v in value.values()) + 64
    if isinstance(value, (list, tuple)):
        return sum(approximate_bytes(v) for v in value) + 56
    attrs = getattr(value, "__dict__", None)
    if attrs:
        return sum(approximate_bytes(v) for v in attrs.values()) + 56
    return sys.getsizeof(value)


class LRUCache(Generic[T]):
    """``get_or_compute(key, compute)``: the value cached for ``key``, else ``compute()`` stored.

    Holds at most ``max_entries`` values and, with ``max_bytes``, at most
    that many bytes by ``size_of`` (default :func:`approximate_bytes`); the
    least recently used go first. A single value larger than ``max_bytes``
    is returned but not kept. ``compute`` runs outside the lock, so other
    threads keep reading while a slow value is computed; a thread asking for
    a key that another is computing waits for that value instead of computing
    it again (and computes it itself if that computation failed). A waiting
    thread is told so every ``poll_s`` seconds through ``on_wait``, and leaves
    by raising from it, as a thread waiting in
    :class:`saliency_core.serving.work_queue.ComputeQueue` does.
    """

    def __init__(self, max_entries: int, max_bytes: int | None = None,
                 size_of: Callable[[object], int] = approximate_bytes, poll_s: float = 0.5) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 or None, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.poll_s = poll_s
        self._size_of = size_of
        self._data: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Event] = {}  # keys being computed now

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def peek(self, key: Hashable) -> T | None:
        """The value cached for ``key``, else None: computes nothing and leaves the order as it is (what a
        page looks at before deciding whether a computation needs to start)."""
        with self._lock:
            entry = self._data.get(key)
            return None if entry is None else entry[0]

    @property
    def nbytes(self) -> int:
        """The bytes held now, by ``size_of``."""
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], T],
                       on_wait: Callable[[float], None] | None = None) -> T:
        """The value cached for ``key``, else ``compute()``, stored (see the class).

        on_wait : called as ``on_wait(seconds)`` (the seconds waited so far)
            when another thread is computing ``key``: at once, then every
            ``poll_s`` seconds until its value is ready. What it raises
            propagates and ends this thread's wait only: the computing thread
            still stores its value for the next one to ask.
        """
        start = time.monotonic()
        while True:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    return self._data[key][0]
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = threading.Event()
                    break
            # Another thread computes it: take its value (or compute it here if that computation failed).
            if on_wait is None:
                pending.wait()
                continue
            while True:
                on_wait(time.monotonic() - start)  # outside the lock: it may draw on a page, or raise
                if pending.wait(self.poll_s):
                    break
        try:
            value = compute()
            size = self._size_of(value) if self.max_bytes is not None else 0
            if self.max_bytes is None or size <= self.max_bytes:
                self._keep(key, value, size)
            return value
        finally:
            with self._lock:
                self._pending.pop(key).set()

    def _keep(self, key: Hashable, value: T, size: int) -> None:
        with self._lock:
            if key in self._data:
                self._bytes -= self._data.pop(key)[1]
            self._data[key] = (value, size)
            self._bytes += size
            while len(self._data) > self.max_entries or (self.max_bytes is not None and self._bytes > self.max_bytes):
                self._bytes -= self._data.popitem(last=False)[1][1]
