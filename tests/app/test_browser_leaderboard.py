"""In Chromium: the Dataset page's leaderboard, for a folder made with three method x objective pairs,
draws each map's mean with its confidence interval as error bars, and the head-to-head matrix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.app.chromium import (
    COLD_WAIT_MS,
    PLOT,
    REPO,
    _streamlit,
    assert_healthy,
    screenshot,
    wait_for_counts,
    wait_idle,
)

# test_browser's session_on fixture, registered here under its own name (the browser is conftest's).

LOG = REPO / "artifacts" / "browser-leaderboard-server.log"


@pytest.fixture(scope="module")
def leaderboard_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    results = tmp_path_factory.mktemp("results")
    images = tmp_path_factory.mktemp("dataset") / "images"

    def three_maps() -> None:  # made while the server starts (the Dataset page reads it lazily)
        from saliency_core.jobs.batch import main as batch_job
        from saliency_core.jobs.imagefolder import write_sample_folder

        write_sample_folder(images, 8)
        assert batch_job(["--images", str(images), "--out", str(results / "three-methods"), "--no-progress",
                          "--maps", "gradient:score,smoothgrad:loss,grad_cam:score", "--smoothgrad-samples", "2",
                          "--faithfulness", "--faithfulness-steps", "4", "--workers", "0"]) == 0

    with _streamlit(request, tmp_path_factory.mktemp("uploads"), LOG, results, while_starting=three_maps) as url:
        yield url


def test_the_leaderboard_shows_confidence_intervals(session_on, leaderboard_url: str):
    s = session_on(leaderboard_url)
    s.goto("/dataset")
    wait_idle(s.page, COLD_WAIT_MS)
    board = s.page.locator(".st-key-dataset_leaderboard_chart .js-plotly-plot")
    board.wait_for(state="visible")
    wait_for_counts(s.page, {PLOT: 4})
    wait_idle(s.page)
    assert_healthy(s, "dataset leaderboard")
    # Plotly draws one error bar per row: three maps and the random order.
    assert board.locator("g.errorbar").count() == 4
    labels = board.locator(".ytick text").all_text_contents()  # SVG text: no inner text
    assert "random order" in labels
    assert "SmoothGrad · loss" in labels and "Grad-CAM · score" in labels
    heads = s.page.locator(".st-key-dataset_head_to_head .js-plotly-plot")
    assert heads.locator(".ytick text").count() == 4
    path = screenshot(s.page, "dataset-leaderboard")
    assert path.stat().st_size > 10_000
