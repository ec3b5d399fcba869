"""Many users at once, in Chromium (the CI side of ``benchmarks/bench_load.py``): sessions on one server
upload different photos at the same moment. Every session gets its own, correct map; the server computes
one map at a time (``SALIENCY_COMPUTE_SLOTS=1``) and the others wait their turn; each map is handed to its
browser, and nothing raises. Timings are the benchmark's job (a busy CI machine can't hold a time goal);
here the timing log is read for what it proves about the queue."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_dashboard import photo
from benchmarks.bench_load import HEATMAP_JS, PLOT_JS, REDRAWN_JS, SETTLED_JS, expected_map
from tests.app.chromium import (
    COLD_WAIT_MS,
    REPO,
    WAIT_MS,
    _streamlit,
    assert_healthy,
    screenshot,
    upload,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


SESSIONS = 6
# A map of many passes (about a second or more each on a CPU), so the uploads, sent a few tens of milliseconds
# apart, surely reach the one slot while it is busy: with one-pass maps a fast machine finished each before
# the next arrived and nobody waited, which proves nothing about the queue.
PARAMS = {"rule": "trapezoid", "steps": 48}
VIEW = "/saliency?method=integrated_gradients&rule=trapezoid&steps=48"
LOG = REPO / "artifacts" / "browser-load-server.log"


@pytest.fixture(scope="module")
def one_slot_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A dashboard that computes one map at a time, writing its timing log; (base URL, timing log)."""
    tmp = tmp_path_factory.mktemp("load")
    timing = tmp / "timing.jsonl"
    with _streamlit(request, tmp / "uploads", LOG,
                    env={"SALIENCY_COMPUTE_SLOTS": "1", "SALIENCY_TIMING_LOG": str(timing)}) as url:
        yield url, timing


def records(timing: Path) -> list[dict]:
    return [json.loads(line) for line in timing.read_text().splitlines()] if timing.exists() else []


def test_sessions_uploading_at_once_each_get_their_correct_map_one_computation_at_a_time(session_on,
                                                                                         one_slot_server):
    url, timing = one_slot_server
    log_start = LOG.stat().st_size if LOG.exists() else 0
    sessions = [session_on(url) for _ in range(SESSIONS)]
    for s in sessions:
        s.goto(VIEW)
    for i, s in enumerate(sessions):  # each has the sample's heatmap drawn and no script running
        s.page.wait_for_function(SETTLED_JS, timeout=COLD_WAIT_MS if i == 0 else WAIT_MS, polling=200)
    photos = [photo(200 + i) for i in range(SESSIONS)]
    before = len(records(timing))

    for s, (name, data) in zip(sessions, photos, strict=True):  # start every upload before waiting on any
        s.page.evaluate(f"() => {{ window.__before = {PLOT_JS}.data[0].z; }}")
        upload(s.page, name, data)
    for s, (name, data) in zip(sessions, photos, strict=True):
        s.page.wait_for_selector(f"text=crop of {name}", timeout=WAIT_MS)
        s.page.wait_for_function(REDRAWN_JS, timeout=WAIT_MS, polling=200)
        assert_healthy(s, f"the session that uploaded {name}")
        shown = s.page.evaluate(HEATMAP_JS)
        ref = expected_map(data, "integrated_gradients", PARAMS)
        values = np.asarray(shown["values"], dtype=np.float64).reshape(shown["shape"])
        assert values.shape == ref.shape, name
        np.testing.assert_allclose(values, ref, rtol=1e-3, atol=1e-6 * float(ref.max()), err_msg=name)
    screenshot(sessions[-1].page, "load-last-session")

    burst = records(timing)[before:]
    analyses = [r for r in burst if r["what"] == "analysis"]
    assert len(analyses) == SESSIONS, burst  # one computation per photo: no session recomputed another's
    spans = sorted((r["finished"] - r["seconds"], r["finished"]) for r in analyses)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.05, f"two maps computed at once with one slot: {spans}"
    assert max(r["waited"] for r in analyses) > 0, "nobody waited: the uploads did not arrive together"
    sent = [r for r in burst if r["what"] == "map sent" and r["page"] == "saliency"]
    assert len(sent) >= SESSIONS, burst
    tracebacks = [line for line in LOG.read_text(errors="replace")[log_start:].splitlines() if "Traceback" in line]
    assert not tracebacks, f"the server logged tracebacks: see {LOG}"
