"""The dataset leaderboard: bootstrap intervals against closed forms and SciPy, head-to-head fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from saliency_core.errors import InvalidInputError
from saliency_core.jobs import leaderboard as lb


def _frame(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "key": [f"img{i}" for i in range(n)],
        "gradient_score_max": 1.0, "gradient_score_deletion_auc": rng.normal(0.20, 0.05, n),
        "gradient_score_insertion_auc": rng.normal(0.50, 0.10, n),
        "smoothgrad_loss_max": 1.0, "smoothgrad_loss_deletion_auc": rng.normal(0.15, 0.05, n),
        "smoothgrad_loss_insertion_auc": rng.normal(0.60, 0.10, n),
        "random_deletion_auc": rng.normal(0.40, 0.05, n), "random_insertion_auc": rng.normal(0.40, 0.05, n),
    })


def test_the_interval_matches_the_normal_theory_interval_for_a_large_sample():
    values = np.random.default_rng(0).normal(3.0, 2.0, 5000)
    mean, low, high = lb.bootstrap_means(values, resamples=4000)
    half = 1.959964 * values.std(ddof=1) / np.sqrt(values.size)  # the closed form, exact for a normal mean
    assert mean == pytest.approx(values.mean())
    assert low == pytest.approx(mean - half, abs=0.1 * half) and high == pytest.approx(mean + half, abs=0.1 * half)


def test_the_interval_agrees_with_scipys_percentile_bootstrap():
    values = np.random.default_rng(5).exponential(1.0, 60)  # skewed: the percentile interval is not symmetric
    _, low, high = lb.bootstrap_means(values, resamples=5000, seed=2)
    ref = sps.bootstrap((values,), np.mean, n_resamples=5000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(3)).confidence_interval
    width = ref.high - ref.low
    assert low == pytest.approx(ref.low, abs=0.08 * width) and high == pytest.approx(ref.high, abs=0.08 * width)


def test_intervals_are_seeded_skip_nan_and_handle_tiny_samples():
    values = np.array([0.1, np.nan, 0.3, 0.2, np.inf, 0.5])
    assert lb.bootstrap_means(values, seed=4) == lb.bootstrap_means(values, seed=4)
    mean, low, high = lb.bootstrap_means(values)
    assert mean == pytest.approx(0.275) and low <= mean <= high
    assert lb.bootstrap_means(np.array([0.7])) == (0.7, 0.7, 0.7)
    assert all(np.isnan(v) for v in lb.bootstrap_means(np.array([np.nan])))
    with pytest.raises(InvalidInputError, match="confidence"):
        lb.bootstrap_means(values, confidence=1.5)


def test_the_leaderboard_ranks_best_first_with_the_random_reference():
    board = lb.leaderboard(_frame())
    t = board.table
    assert list(t["map"]) == ["smoothgrad_loss", "gradient_score", "random"]
    assert list(t["title"]) == ["SmoothGrad · loss", "Gradient · score", "random order"]
    assert (t["images"] == 400).all()
    assert board.metrics == ("insertion_minus_deletion", "deletion_auc", "insertion_auc")  # those it has
    for metric in board.metrics:
        assert (t[f"{metric}_low"] <= t[f"{metric}_mean"]).all() and (t[f"{metric}_mean"] <= t[f"{metric}_high"]).all()
    frame = _frame()
    diff = frame["gradient_score_insertion_auc"] - frame["gradient_score_deletion_auc"]
    row = t.set_index("map").loc["gradient_score"]
    assert row["insertion_minus_deletion_mean"] == pytest.approx(diff.mean())
    by_deletion = lb.leaderboard(frame, by="deletion_auc").table
    assert list(by_deletion["map"]) == ["smoothgrad_loss", "gradient_score", "random"]  # lower first
    with pytest.raises(InvalidInputError, match="by must be one of"):
        lb.leaderboard(frame, by="gini")


def test_head_to_head_fractions_are_complementary_and_count_ties_half():
    frame = pd.DataFrame({"score_max": 1.0, "loss_max": 1.0,
                          "score_deletion_auc": [0.1, 0.2, 0.3, np.nan], "score_insertion_auc": [0.5, 0.5, 0.5, 0.5],
                          "loss_deletion_auc": [0.2, 0.2, 0.1, 0.4], "loss_insertion_auc": [0.4, 0.6, 0.5, 0.5]})
    wins = lb.head_to_head(frame, metric="deletion_auc")
    # score beats loss on image 0 (lower deletion), ties on 1, loses on 2; image 3 has no score value.
    assert wins.loc["score", "loss"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert wins.loc["score", "loss"] + wins.loc["loss", "score"] == pytest.approx(1.0)
    assert np.isnan(wins.loc["score", "score"])
    ins = lb.head_to_head(frame, metric="insertion_auc")
    assert ins.loc["loss", "score"] == pytest.approx((0 + 1 + 0.5 + 0.5) / 4)


def test_a_table_without_faithfulness_columns_has_no_maps_to_rank():
    frame = pd.DataFrame({"score_max": [1.0], "score_gini": [0.3]})
    assert lb.faithfulness_maps(frame) == []
    assert lb.leaderboard(frame).table.empty and lb.head_to_head(frame).empty


def test_the_interval_figure_draws_each_interval_and_keeps_names_as_text():
    from saliency_core.figures.charts import intervals_figure

    t = lb.leaderboard(_frame()).table
    labels = [*t["title"][:-1], "<b>random</b>"]
    fig = intervals_figure(labels, t["insertion_minus_deletion_mean"], t["insertion_minus_deletion_low"],
                           t["insertion_minus_deletion_high"], x_title="insertion − deletion",
                           reference="<b>random</b>")
    (trace,) = fig.data
    np.testing.assert_allclose(np.asarray(trace.x) + np.asarray(trace.error_x.array),
                               t["insertion_minus_deletion_high"])
    np.testing.assert_allclose(np.asarray(trace.x) - np.asarray(trace.error_x.arrayminus),
                               t["insertion_minus_deletion_low"])
    assert list(trace.y)[-1] == "&lt;b&gt;random&lt;/b&gt;" and trace.marker.color[-1] == "#888888"
    with pytest.raises(InvalidInputError, match="one entry each"):
        intervals_figure(["a"], [1.0, 2.0], [0.0], [3.0], x_title="x")


def test_the_display_table_puts_the_ranking_metric_first_with_its_interval():
    board = lb.leaderboard(_frame(), by="deletion_auc")
    shown = lb.display_table(board)
    assert list(shown.columns)[:4] == ["map", "images", "deletion AUC", "deletion AUC, 95 % interval"]
    row = board.table.iloc[0]
    expected = f"[{row['deletion_auc_low']:.3f}, {row['deletion_auc_high']:.3f}]"
    assert shown["deletion AUC, 95 % interval"].iloc[0] == expected


def _metric_frame(n: int = 300, seed: int = 2) -> pd.DataFrame:
    """Two maps with a lower-is-better metric (ROAD MoRF) and a higher-is-better one (sparseness), and AUCs."""
    frame = _frame(n, seed)
    rng = np.random.default_rng(seed + 1)
    return frame.assign(gradient_score_road_morf=rng.normal(2.0, 0.5, n), smoothgrad_loss_road_morf=rng.normal(
        3.0, 0.5, n), gradient_score_sparseness=rng.normal(0.3, 0.05, n),
        smoothgrad_loss_sparseness=rng.normal(0.6, 0.05, n), score_max=1.0, score_sparseness=0.9)


def test_any_metric_column_ranks_the_maps_the_way_its_declaration_says_is_better():
    frame = _metric_frame()
    assert lb.METRICS["road_morf"] == "lower is better" and lb.METRICS["sparseness"] == "higher is better"
    assert {"road_morf", "sparseness"} <= set(lb.available_metrics(frame))
    assert "road_lerf" not in lb.available_metrics(frame)  # no map has it
    by_road = lb.leaderboard(frame, by="road_morf")
    t = by_road.table
    # Lower ROAD MoRF first; the random order has no ROAD value and is no reference for it.
    assert list(t["map"]) == ["gradient_score", "smoothgrad_loss"]
    assert t["road_morf_mean"].tolist() == pytest.approx([frame["gradient_score_road_morf"].mean(),
                                                          frame["smoothgrad_loss_road_morf"].mean()])
    assert by_road.metrics[0] == "road_morf" and "sparseness" in by_road.metrics and "deletion_auc" in by_road.metrics
    for metric in by_road.metrics:
        assert (t[f"{metric}_low"] <= t[f"{metric}_mean"]).all() and (t[f"{metric}_mean"] <= t[f"{metric}_high"]).all()
    by_sparseness = lb.leaderboard(frame, by="sparseness").table
    # Higher first; the third map (score, sparseness only) is ranked too, with its constant value.
    assert list(by_sparseness["map"]) == ["score", "smoothgrad_loss", "gradient_score"]
    assert by_sparseness.set_index("map").loc["score", "sparseness_low"] == pytest.approx(0.9)
    wins = lb.head_to_head(frame, metric="road_morf")
    expected = (frame["gradient_score_road_morf"] < frame["smoothgrad_loss_road_morf"]).mean()
    assert wins.loc["Gradient · score", "SmoothGrad · loss"] == pytest.approx(expected)
    shown = lb.display_table(by_road)
    assert list(shown.columns[2:4]) == ["ROAD, most relevant first", "ROAD, most relevant first, 95 % interval"]


def test_a_metric_the_results_lack_ranks_nothing():
    frame = _frame(20)
    assert lb.available_metrics(frame) == ["deletion_auc", "insertion_auc", "insertion_minus_deletion"]
    assert lb.leaderboard(frame, by="infidelity").table.empty
    assert np.isnan(lb.metric_values(frame, "gradient_score", "infidelity")).all()
