"""A first-come, first-served queue in front of the model: a bounded number of computations at once.

Every dashboard session runs its script in its own thread, all sharing one
model. Without a bound, a burst of requests all compute at once: on a GPU
that multiplies the memory in use, on a CPU they share the cores and all
finish late. Queued, at most ``slots`` run, and the others know how many
requests are ahead of theirs.

::

    queue = ComputeQueue(slots=2)
    with queue.slot(on_wait=lambda ahead: show(f"{ahead} requests ahead of yours")):
        maps = compute(...)

A waiting request that its session no longer needs is dropped: ``on_wait``
is called every ``poll_s`` seconds while waiting, and whatever it raises
(Streamlit raises its rerun and stop exceptions from inside page calls
when the user moves on) takes the request out of the queue and propagates.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from saliency_core.errors import InvalidInputError

SLOTS_SETTING = "SALIENCY_COMPUTE_SLOTS"


CPU_SLOTS = 2


def default_slots(environ: dict[str, str] | None = None, cuda_devices: int | None = None) -> int:
    """How many computations may run at once: ``SALIENCY_COMPUTE_SLOTS`` if set, else one per GPU, else
    :data:`CPU_SLOTS` (two).

    On a CPU, torch spreads one computation over every core; yet with eight
    browser sessions uploading at once on the 2-core machine, one slot made
    the median time to heatmap 33 s against 22 s with two (requests arrive
    spread over the uploads, and a second slot lets one start while another
    finishes; ``benchmarks/bench_load.py --slots 2 1``, RESULTS.md).
    """
    env = os.environ if environ is None else environ
    value = env.get(SLOTS_SETTING, "").strip()
    if value:
        try:
            slots = int(value)
        except ValueError:
            slots = 0
        if slots < 1:
            raise InvalidInputError(f"{SLOTS_SETTING} must be a whole number >= 1, got {value!r}")
        return slots
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return cuda_devices if cuda_devices > 0 else CPU_SLOTS


@dataclass(frozen=True)
class QueueState:
    """A snapshot: ``running`` computations now, ``waiting`` requests behind them, ``slots`` at most at once."""

    running: int
    waiting: int
    slots: int


class ComputeQueue:
    """At most ``slots`` holders at once; the others wait in arrival order (a fair, cancellable semaphore)."""

    def __init__(self, slots: int = 1, poll_s: float = 0.5) -> None:
        if not isinstance(slots, int) or slots < 1:
            raise InvalidInputError(f"slots must be a whole number >= 1, got {slots!r}")
        self.slots = slots
        self.poll_s = poll_s
        self._cond = threading.Condition()
        self._waiting: list[int] = []  # tickets in arrival order
        self._running = 0
        self._tickets = itertools.count()

    def state(self) -> QueueState:
        with self._cond:
            return QueueState(self._running, len(self._waiting), self.slots)

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None) -> Iterator[float]:
        """Hold one of the slots for the ``with`` block; yields the seconds spent waiting for it.

        on_wait : called as ``on_wait(ahead)`` (requests ahead of this one,
            running ones included) when the request has to wait, then every
            ``poll_s`` seconds until it runs. What it raises cancels the request.
        """
        start = time.monotonic()
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            try:
                while not self._may_run(ticket):
                    ahead = self._running + self._waiting.index(ticket)
                    if on_wait is not None:
                        self._cond.release()  # the callback may draw on a page: never while holding the lock
                        try:
                            on_wait(ahead)
                        finally:
                            self._cond.acquire()
                        if self._may_run(ticket):
                            break
                    self._cond.wait(self.poll_s)
            except BaseException:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the ones behind move up
                raise
            self._waiting.remove(ticket)
            self._running += 1
        try:
            yield time.monotonic() - start
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _may_run(self, ticket: int) -> bool:
        """Whether ``ticket`` is among the first free slots' worth of waiters (called with the lock held)."""
        free = self.slots - self._running
        return free > 0 and self._waiting.index(ticket) < free
