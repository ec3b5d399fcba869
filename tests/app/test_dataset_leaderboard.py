"""The Dataset page's leaderboard on a results folder the batch job made with three method x objective pairs.

The numbers drawn must be those of ``saliency_core.jobs.leaderboard`` for the
same rows (not re-derived by the page), the outcome split must use only
that outcome's images, and two chosen maps' worst disagreements come from
their own agreement column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saliency_core.jobs import leaderboard
from saliency_core.jobs.batch import main
from saliency_core.jobs.dataset_view import filter_rows
from saliency_core.jobs.imagefolder import write_sample_folder
from saliency_core.jobs.results import load_results
from tests.app.apptest import charts, decode_plotly_array, shown

pytestmark = pytest.mark.usefixtures("upload_dir")

PAGE = "pages/dataset.py"
ENTRIES = "gradient:score,smoothgrad:loss,grad_cam:score"  # --maps


@pytest.fixture(scope="module")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    images = write_sample_folder(tmp_path_factory.mktemp("data") / "images", 8)
    assert main(["--images", str(images), "--out", str(root / "three"), "--maps", ENTRIES,
                 "--smoothgrad-samples", "2", "--faithfulness", "--faithfulness-steps", "4", "--workers", "0",
                 "--no-progress"]) == 0
    return root


@pytest.fixture
def app(new_app, results_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SALIENCY_RESULTS_DIR", str(results_root))
    return new_app


def _values(trace: dict, name: str) -> np.ndarray:
    value = trace[name]
    return decode_plotly_array(value) if isinstance(value, dict) else np.asarray(value, dtype=np.float64)


def test_the_leaderboard_draws_the_cores_means_and_intervals(app, results_root: Path):
    at = app(page=PAGE).run()
    assert not at.exception and not at.error
    rows = load_results(results_root / "three").results
    board = leaderboard.leaderboard(rows).table
    (trace,) = charts(at)["dataset_leaderboard_chart"]["data"]
    assert list(trace["y"]) == list(board["title"])
    assert "random order" in trace["y"] and len(trace["y"]) == 4
    x = _values(trace, "x")
    np.testing.assert_allclose(x, board["insertion_minus_deletion_mean"])
    np.testing.assert_allclose(x + _values(trace["error_x"], "array"), board["insertion_minus_deletion_high"])
    np.testing.assert_allclose(x - _values(trace["error_x"], "arrayminus"), board["insertion_minus_deletion_low"])
    # Only a selectable table carries its key in AppTest: this one is known by its columns.
    table = next(d.value for d in at.dataframe if "insertion − deletion, 95 % interval" in d.value.columns)
    assert list(table["map"]) == list(board["title"]) and (table["images"] == len(rows)).all()
    wins = charts(at)["dataset_head_to_head"]["data"][0]
    expected = leaderboard.head_to_head(rows).to_numpy()
    np.testing.assert_allclose(_values(wins, "z"), expected, rtol=1e-6, equal_nan=True)
    assert "percentile-bootstrap" in " ".join(shown(c.value) for c in at.caption)


def test_ranking_by_deletion_reorders_and_outcomes_are_split(app, results_root: Path):
    at = app(page=PAGE).run()
    at.segmented_control(key="dataset_rank_by").set_value("deletion_auc").run()
    assert not at.exception
    rows = load_results(results_root / "three").results
    (trace,) = charts(at)["dataset_leaderboard_chart"]["data"]
    board = leaderboard.leaderboard(rows, by="deletion_auc").table
    assert list(trace["y"]) == list(board["title"])
    figs = charts(at)
    for outcome in ("correct", "wrong"):
        subset = filter_rows(rows, outcome=outcome)
        if len(subset) < 2:
            assert f"dataset_board_{outcome}" not in figs
            continue
        (t,) = figs[f"dataset_board_{outcome}"]["data"]
        np.testing.assert_allclose(_values(t, "x"),
                                   leaderboard.leaderboard(subset, by="deletion_auc").table["deletion_auc_mean"])


def test_two_chosen_maps_show_their_worst_disagreements(app, results_root: Path):
    at = app(page=PAGE).run()
    at.selectbox(key="dataset_pair_a").set_value("smoothgrad_loss").run()
    at.selectbox(key="dataset_pair_b").set_value("grad_cam_score").run()
    assert not at.exception and not at.error
    rows = load_results(results_root / "three").results
    column = "agree_smoothgrad_loss_vs_grad_cam_score_spearman"
    worst = rows.sort_values([column, "key"], na_position="last").head(6)
    text = " ".join(shown(m.value) for m in at.markdown)
    first = worst.iloc[0]
    assert f"{first['key']}" in text and f"Spearman ρ {first[column]:.3f}" in text


def test_a_disagreeing_image_opens_in_methods_with_both_maps_methods(app, results_root: Path):
    at = app(page=PAGE).run()
    at.selectbox(key="dataset_pair_a").set_value("smoothgrad_loss").run()
    at.selectbox(key="dataset_pair_b").set_value("grad_cam_score").run()
    rows = load_results(results_root / "three").results
    worst = rows.sort_values(["agree_smoothgrad_loss_vs_grad_cam_score_spearman", "key"]).iloc[0]
    at.button(key="open_worst_methods_0").click().run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Which method should I believe?"
    assert at.multiselect(key="methods_pick").value == ["smoothgrad", "grad_cam"]
    assert worst["key"] in " ".join(shown(c.value) for c in at.caption) + " ".join(
        shown(m.value) for m in at.markdown)


def test_maps_the_job_did_not_save_are_computed_as_the_job_computed_them(app, results_root: Path, lite0):
    from saliency_core import attribute
    from saliency_core.inputs.images import load_image

    at = app(page=PAGE).run()
    at.selectbox(key="dataset_pair_a").set_value("smoothgrad_loss").run()
    at.selectbox(key="dataset_pair_b").set_value("grad_cam_score").run()
    assert not at.exception and not at.error
    rows = load_results(results_root / "three").results
    worst = rows.sort_values(["agree_smoothgrad_loss_vs_grad_cam_score_spearman", "key"]).iloc[0]
    fig = charts(at)["dataset_pair_0"]
    assert [t["type"] for t in fig["data"]] == ["image", "heatmap", "heatmap"]
    x = lite0.preprocess([load_image(worst["path"])]).x
    target = [int(worst["target"])]
    smooth = attribute(lite0, x, target, "smoothgrad", samples=2).maps["loss"][0].numpy()  # --smoothgrad-samples 2
    cam = attribute(lite0, x, target, "grad_cam").maps["score"][0].numpy()
    drawn = [decode_plotly_array(t["z"]) for t in fig["data"][1:]]
    np.testing.assert_allclose(drawn[0], smooth, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(drawn[1], cam, rtol=1e-4, atol=1e-7)
    assert "computed here with EfficientNet-Lite0" in " ".join(shown(c.value) for c in at.caption)


def test_maps_over_the_compute_budget_are_not_computed_and_the_page_says_so(app, monkeypatch):
    from pages.ui import caches

    caches.analyses().clear()  # nothing computed by the tests before
    monkeypatch.setenv("SALIENCY_CONFIRM_ABOVE_S", "0")  # anything worth estimating asks first
    at = app(page=PAGE).run()
    at.selectbox(key="dataset_pair_a").set_value("smoothgrad_loss").run()
    at.selectbox(key="dataset_pair_b").set_value("grad_cam_score").run()
    assert not at.exception and not at.error
    assert not [k for k in charts(at) if k.startswith("dataset_pair_")]
    said = " ".join(shown(c.value) for c in at.caption)
    assert "computing them here would take about" in said and "open an image in Methods" in said, said
