"""Failures remembered for a short while, so that a step that failed is not tried again on every rerun.

A Streamlit page runs again on every click. When choosing a model fails (its
weights can't be downloaded, its file can't be loaded), trying again on each
of those runs would hit the network or read the file every time, for every
session; the dashboard remembers the failure instead and tries again when it
is forgotten: after a while, or when the user asks. One instance serves every
session of a server process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class RecentFailures:
    """What each recent failure was (a message or the exception) by key, forgotten ``seconds`` after it was
    remembered.

    ``clock``: seconds from any origin, never going back (:func:`time.monotonic`).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        self.seconds = seconds
        self._clock = clock
        self._failed: dict[Hashable, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def remember(self, key: Hashable, failure: object) -> None:
        with self._lock:
            now = self._clock()
            # Drop the expired ones here, so that keys never asked for again don't pile up.
            self._failed = {k: v for k, v in self._failed.items() if now - v[0] < self.seconds}
            self._failed[key] = (now, failure)

    def get(self, key: Hashable) -> object | None:
        """What ``key``'s failure was, if it is recent, else None."""
        with self._lock:
            entry = self._failed.get(key)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self.seconds:
                del self._failed[key]
                return None
            return entry[1]

    def forget(self, key: Hashable) -> None:
        """Try ``key`` again next time (the user's "Try again")."""
        with self._lock:
            self._failed.pop(key, None)
