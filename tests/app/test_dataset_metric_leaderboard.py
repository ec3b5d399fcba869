"""The Dataset page's leaderboard on results made with ``--metrics`` and no ``--faithfulness``: it offers the metric
columns the results hold, and ranks the maps by the chosen one the way its declaration says is better."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saliency_core.jobs import leaderboard
from saliency_core.jobs.batch import main
from saliency_core.jobs.imagefolder import write_sample_folder
from saliency_core.jobs.results import load_results
from tests.app.apptest import charts, shown
from tests.app.test_dataset_leaderboard import _values

pytestmark = pytest.mark.usefixtures("upload_dir")

PAGE = "pages/dataset.py"


@pytest.fixture(scope="module")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    images = write_sample_folder(tmp_path_factory.mktemp("data") / "images", 6, corrupt=0)
    # The two metrics of the maps alone: no forward pass, so the fixture is quick; one better high, one low.
    assert main(["--images", str(images), "--out", str(root / "metrics"), "--maps", "gradient:score,grad_cam:score",
                 "--metrics", "sparseness,complexity", "--workers", "0", "--no-progress"]) == 0
    return root


@pytest.fixture
def app(new_app, results_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SALIENCY_RESULTS_DIR", str(results_root))
    return new_app


def test_the_leaderboard_offers_the_metric_columns_and_ranks_by_them(app, results_root: Path):
    at = app(page=PAGE).run()
    assert not at.exception and not at.error
    control = at.segmented_control(key="dataset_rank_by")
    assert list(control.options) == [leaderboard.METRIC_TITLES[m] for m in ("sparseness", "complexity")]
    assert control.value == "sparseness"  # no deletion/insertion here: the first metric the results have
    rows = load_results(results_root / "metrics").results
    for by in ("sparseness", "complexity"):
        if by != control.value:
            at.segmented_control(key="dataset_rank_by").set_value(by).run()
            assert not at.exception and not at.error
        board = leaderboard.leaderboard(rows, by=by).table
        (trace,) = charts(at)["dataset_leaderboard_chart"]["data"]
        assert list(trace["y"]) == list(board["title"]) and len(trace["y"]) == 2  # no random order for these
        means = _values(trace, "x")
        np.testing.assert_allclose(means, board[f"{by}_mean"])
        # Higher sparseness first, lower complexity first: the declaration's direction.
        assert list(means) == sorted(means, reverse=leaderboard.METRICS[by] == "higher is better")
        direct = {t: rows[f"{m}_{by}"].mean() for m, t in zip(board["map"], board["title"], strict=True)}
        np.testing.assert_allclose(means, [direct[t] for t in trace["y"]])
        assert leaderboard.METRIC_NOTES[by] in " ".join(shown(c.value) for c in at.caption)
    title = leaderboard.METRIC_TITLES["complexity"]  # ranked by it last: its columns come first
    table = next(d.value for d in at.dataframe if f"{title}, 95 % interval" in d.value.columns)
    assert list(table.columns[2:4]) == [title, f"{title}, 95 % interval"]
    assert leaderboard.METRIC_TITLES["sparseness"] in table.columns


def test_a_link_to_a_metric_these_results_lack_falls_back(app):
    at = app(page=PAGE, rank_by="road_morf").run()
    assert not at.exception and not at.error
    assert at.segmented_control(key="dataset_rank_by").value == "sparseness"
