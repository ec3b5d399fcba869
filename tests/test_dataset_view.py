"""saliency_core.jobs.dataset_view: the Dataset page's filters, columns and headline numbers, without Streamlit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from saliency_core.jobs import dataset_view as dv
from saliency_core.jobs.map_specs import split_map_column


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "key": ["n01/a.jpg", "n01/B.jpg", "n02/c.jpg", "loose/d.jpg"],
        "target": [1, 1, 2, 5],
        "target_name": ["goldfish", "goldfish", "shark", "hen"],
        "correct": pd.array([True, False, True, None], dtype="boolean"),
        "prob_target": [0.9, 0.2, 0.7, 0.5],
        "score_gini": [0.5, 0.6, 0.7, 0.8],
        "loss_gini": [0.4, 0.5, 0.6, 0.7],
        "agree_spearman": [0.9, np.nan, 0.1, 0.5],
        "loss": [0.1, 1.6, 0.3, 0.7],
        "width": [10.0, 10.0, 10.0, 10.0],
    })


def test_filters_combine_classes_outcome_and_literal_text(frame):
    assert list(dv.filter_rows(frame)["key"]) == list(frame["key"])
    assert list(dv.filter_rows(frame, ["goldfish"])["key"]) == ["n01/a.jpg", "n01/B.jpg"]
    assert list(dv.filter_rows(frame, outcome="correct")["key"]) == ["n01/a.jpg", "n02/c.jpg"]
    assert list(dv.filter_rows(frame, outcome="wrong")["key"]) == ["n01/B.jpg"]
    assert list(dv.filter_rows(frame, outcome="no label")["key"]) == ["loose/d.jpg"]
    assert list(dv.filter_rows(frame, ["goldfish"], "correct", "A.JPG")["key"]) == ["n01/a.jpg"]
    assert dv.filter_rows(frame, text=".*").empty  # literal, not a regular expression
    with pytest.raises(ValueError, match="outcome must be one of"):
        dv.filter_rows(frame, outcome="maybe")


def test_filters_on_missing_columns_keep_nothing_instead_of_raising():
    minimal = pd.DataFrame({"key": ["a", "b"], "target": [1, 2], "prediction": [1, 3]})
    assert len(dv.filter_rows(minimal)) == 2
    assert dv.filter_rows(minimal, ["goldfish"]).empty
    assert dv.filter_rows(minimal, outcome="wrong").empty
    assert dv.target_classes(minimal) == []


def test_headline_counts_accuracy_over_labelled_images_only(frame):
    top = dv.headline(frame)
    assert (top.images, top.labelled) == (4, 3)
    assert top.accuracy == pytest.approx(2 / 3)
    assert top.median_spearman == pytest.approx(0.5)
    bare = dv.headline(pd.DataFrame({"key": ["a"]}))
    assert bare.accuracy is None and bare.median_spearman is None


def test_columns_split_by_method(frame):
    numeric = dv.numeric_columns(frame)
    assert "width" not in numeric and "target" not in numeric
    assert split_map_column("score_gini") == ("score", "gini")
    assert split_map_column("loss_insertion_auc") == ("loss", "insertion_auc")
    assert split_map_column("loss") == (None, "loss")
    assert split_map_column("prob_target") == (None, "prob_target")
    assert split_map_column("integrated_gradients_loss_completeness_gap") == ("integrated_gradients_loss",
                                                                              "completeness_gap")
    assert split_map_column("agree_gradient_score_vs_grad_cam_loss_ssim") == (None,
                                                                             "agree_gradient_score_vs_grad_cam_loss_ssim")
    assert split_map_column("random_deletion_auc") == (None, "random_deletion_auc")
    assert dv.method_statistics(numeric) == ["gini"]
    assert dv.other_columns(numeric) == ["prob_target", "agree_spearman", "loss"]
    assert dv.table_columns(frame) == ["key", "target_name", "prob_target", "correct", "score_gini", "loss_gini",
                                       "agree_spearman"]


def test_the_table_of_a_run_with_method_pairs_shows_each_maps_gini_aucs_and_agreement():
    names = ["gradient_score", "smoothgrad_loss", "grad_cam_score"]
    frame = pd.DataFrame({"key": ["a"], "prob_target": [0.5],
                          **{f"{m}_{s}": [0.1] for m in names for s in ("max", "gini", "deletion_auc",
                                                                          "insertion_auc")},
                          "agree_gradient_score_vs_smoothgrad_loss_spearman": [0.3],
                          "agree_gradient_score_vs_grad_cam_score_spearman": [0.2],
                          "agree_smoothgrad_loss_vs_grad_cam_score_spearman": [0.1]})
    assert dv.table_columns(frame) == [
        "key", "prob_target", *[f"{m}_gini" for m in names], *[f"{m}_deletion_auc" for m in names],
        *[f"{m}_insertion_auc" for m in names], "agree_gradient_score_vs_smoothgrad_loss_spearman",
        "agree_gradient_score_vs_grad_cam_score_spearman", "agree_smoothgrad_loss_vs_grad_cam_score_spearman"]
    from saliency_core.jobs.map_specs import agreement_column

    assert agreement_column("grad_cam_score", "gradient_score", "spearman", frame.columns) == \
        "agree_gradient_score_vs_grad_cam_score_spearman"
    assert agreement_column("score", "loss", "spearman", ["agree_spearman"]) == "agree_spearman"
    assert agreement_column("score", "grad_cam_score", "spearman", frame.columns) is None


@pytest.mark.parametrize(("n", "bins"), [(0, 10), (12, 10), (100, 20), (400, 40), (50_000, 50)])
def test_histogram_bins_grow_with_the_square_root(n, bins):
    assert dv.histogram_bins(n) == bins


def test_per_class_means_and_accuracy(frame):
    table = dv.per_class(frame)
    assert list(table["target"]) == [1, 2, 5]
    first = table.iloc[0]
    assert (first["class"], first["images"], first["accuracy"]) == ("goldfish", 2, 0.5)
    assert first["score_gini"] == pytest.approx(0.55)
    assert math.isnan(table.iloc[2]["accuracy"])


def test_per_class_of_a_minimal_table_does_not_raise():
    minimal = pd.DataFrame({"key": ["a", "b", "c"], "target": [1, 2, 1], "prediction": [1, 3, 1]})
    table = dv.per_class(minimal)
    assert list(table["target"]) == [1, 2] and list(table["images"]) == [2, 1]
    assert table["accuracy"].isna().all()
    assert dv.per_class(pd.DataFrame({"key": ["a"]})).empty


def test_most_disagreeing_puts_unknown_agreement_last(frame):
    assert list(dv.most_disagreeing(frame, 4)["key"]) == ["n02/c.jpg", "loose/d.jpg", "n01/a.jpg", "n01/B.jpg"]
    assert dv.most_disagreeing(frame.drop(columns="agree_spearman")).empty


def test_row_fields_fill_what_a_minimal_table_lacks(frame):
    full = dv.row_fields(frame.iloc[0])
    assert full["key"] == "n01/a.jpg" and full["target"] == "goldfish" and full["prob_target"] == "0.900"
    assert full["prediction"] == "—" and full["label"] == "—"
    minimal = dv.row_fields(pd.Series({"key": "a", "target": 3, "prediction": 7}))
    assert minimal == {"key": "a", "label": "—", "target": "3", "target_source": "—", "prediction": "7",
                       "prob_prediction": "—", "prob_target": "—", "agree_spearman": "—"}
    assert dv.row_fields(frame.iloc[1])["agree_spearman"] == "—"  # NaN
