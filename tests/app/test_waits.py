"""The browser tests' waits are bounded each on its own, never by how long the suite has run.

Under load (the README's test command at load 5-14) the whole suite took 31 minutes and a proxy
test failed only because a 20-minute budget shared by every browser test, counted from the first
browser launch, had run out, while the page it waited for was fine. Slowness alone must never fail
a test: each wait gets its full timeout however late it starts.
"""

from __future__ import annotations

import time

import tests.app.chromium as harness


class Waits:
    """A stand-in page that records the timeout each wait is given (and returns at once)."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def locator(self, selector):
        return self

    def nth(self, n):
        return self

    def wait_for(self, state=None, timeout=None):
        self.timeouts.append(timeout)

    def wait_for_selector(self, selector, timeout=None):
        self.timeouts.append(timeout)

    def wait_for_function(self, expression, timeout=None, **kwargs):
        self.timeouts.append(timeout)


def test_a_wait_late_in_a_slow_run_still_gets_its_full_timeout(monkeypatch):
    if hasattr(harness, "_DEADLINE"):  # the old harness: a budget counted from the browser's launch, spent
        monkeypatch.setattr(harness, "_DEADLINE", [time.monotonic() - 1])
    page = Waits()
    harness.wait_for_counts(page, {"a": 1, "b": 2}, 5_000)
    harness.wait_idle(page, 5_000)
    assert page.timeouts[:2] == [5_000, 5_000]
    assert all(t >= 4_000 for t in page.timeouts[2:])  # one script run's wait, shared by its three steps
