"""The server's timing log: with ``SALIENCY_TIMING_LOG`` set to a file, one JSON line per computation
(its queue wait and duration, from :func:`pages.ui.waiting.queued`; ``"stopped"`` when its session left or
reran before it finished) and per map handed to the browser (the
time from the start of the script run, which an upload or a click sets off, to the figure sent).
``benchmarks/bench_load.py`` reads it to give the server's side of a load test; unset, nothing is timed.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

ENV = "SALIENCY_TIMING_LOG"
_run = threading.local()  # Streamlit runs each session's script on its own thread


def append(record: dict) -> None:
    """Add ``record`` (with the time it was written, ``finished``) as one line of the log, if there is one."""
    log = os.environ.get(ENV)
    if not log:
        return
    line = json.dumps({**record, "finished": time.time()})
    with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def run_started() -> None:
    """Called first thing in every script run (``dashboard.py``)."""
    _run.started = time.perf_counter()


def map_sent(page: str) -> None:
    """Log the seconds from the start of this script run to now, when ``page`` has handed its map over."""
    started = getattr(_run, "started", None)
    if started is not None:
        append({"what": "map sent", "page": page, "seconds": round(time.perf_counter() - started, 4)})
