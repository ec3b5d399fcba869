"""ranking_table: AUCs are faithfulness.deletion_insertion's, the randomisation score the Sanity check's; downloads."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import faithfulness, metric_table, sanity
from saliency_core.evaluation.method_comparison import compare_methods
from saliency_core.evaluation.method_ranking import RANDOM_ORDER, RANKING_COLUMNS, RANKING_METRICS, ranking_table
from saliency_core.evaluation.metrics import get_metric
from saliency_core.figures import provenance
from saliency_core.figures.evaluation_files import ranking_csv, ranking_filename, ranking_json
from tests.test_export import read_csv_provenance
from tests.test_sanity import state_hash

METHODS = ("gradient_x_input", "grad_cam", "smoothgrad")
PARAMS = {"smoothgrad": {"samples": 2, "seed": 1}}
STEPS = 4



@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def ranked(lite0, image):
    comparison = compare_methods(lite0, image, -1, METHODS, PARAMS)
    before = state_hash(lite0.model)
    calls = []
    ranking = ranking_table(lite0, image, comparison, steps=STEPS, baseline="blur", seed=3, batch_size=64,
                            progress=lambda d, t: calls.append((d, t)))
    assert state_hash(lite0.model) == before  # the shared model is never touched
    return comparison, ranking, calls


def test_aucs_are_deletion_insertions_own(lite0, image, ranked):
    comparison, ranking, _ = ranked
    table = ranking.table
    assert list(table.columns) == list(RANKING_COLUMNS) and len(table) == 2 * len(METHODS) + 1
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    assert table["insertion_minus_deletion"].is_monotonic_decreasing
    for method, obj, label, m in comparison.entries()[::2]:  # the score maps: enough, and half the time
        alone = faithfulness.deletion_insertion(lite0, image, [comparison.target], m[None], STEPS, "blur",
                                                batch_size=64)
        row = table.set_index("map").loc[label]
        assert (row["method"], row["objective"]) == (method, obj)
        assert row["deletion_auc"] == pytest.approx(float(alone.deletion_auc[0]), abs=1e-6)
        assert row["insertion_auc"] == pytest.approx(float(alone.insertion_auc[0]), abs=1e-6)
    reference = faithfulness.deletion_insertion(lite0, image, [comparison.target], None, STEPS, "blur",
                                                order="random", seed=3, batch_size=64)
    row = table.set_index("map").loc[RANDOM_ORDER]
    assert row["method"] == "random" and np.isnan(row["randomised_spearman"])
    assert row["deletion_auc"] == pytest.approx(float(reference.deletion_auc[0]), abs=1e-6)
    assert all(np.isnan(row[name]) for name in RANKING_METRICS)  # the random order has no map


def test_randomisation_score_is_the_cascades_last_stage_with_the_same_method(lite0, image, ranked):
    comparison, ranking, _ = ranked
    table = ranking.table.set_index("map")
    # One stage re-initialises every layer: the same weights as the last of any number of stages.
    for method in ("smoothgrad",):
        cascade = sanity.cascading_randomization(lite0, image, [comparison.target], objectives=("score", "loss"),
                                                 max_stages=1, seed=3, attribution=method,
                                                 params=PARAMS.get(method))
        last = cascade.similarity[cascade.similarity.stage_index == 1].set_index("objective")
        for obj, label in ((o, lbl) for m, o, lbl, _ in comparison.entries() if m == method):
            np.testing.assert_array_equal(ranking.randomised_maps[label], cascade.maps[obj][-1, 0])
            assert table.loc[label, "randomised_spearman"] == pytest.approx(last.loc[obj, "spearman"], nan_ok=True)
    assert ranking.params["smoothgrad"] == {"samples": 2, "noise": 0.15, "seed": 1}


def test_metric_columns_are_the_engine_metrics_of_each_map(ranked):
    comparison, ranking, _ = ranked
    assert set(RANKING_METRICS) == set(metric_table.MAP_ONLY) and set(RANKING_METRICS) <= set(ranking.table)
    rows = ranking.table.set_index("map")
    for _, _, label, m in comparison.entries():
        for name in RANKING_METRICS:
            expected = float(get_metric(name).run(torch.as_tensor(m, dtype=torch.float64)[None])[0])
            assert rows.loc[label, name] == pytest.approx(expected, rel=1e-12, nan_ok=True), (label, name)


def test_progress_reaches_its_total(ranked):
    _, _, calls = ranked
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1]


def record(ranking, **saliency):
    return provenance.provenance(
        model_name="efficientnet_lite0", weights="embedded", preprocessing="resize 256, crop 224",
        target=ranking.target, target_name="<b>cat</b>", objective=None, reduction=saliency.get("reduction", "max"),
        precision=saliency.get("precision", "exact"), image_sha256="ab" * 32, image_source="sample", device="cpu")


def test_csv_and_json_carry_provenance(ranked):
    _, ranking, _ = ranked
    data = ranking_csv(ranking, record(ranking))
    table = pd.read_csv(io.BytesIO(data), comment="#", keep_default_na=False, na_values=[""])
    assert list(table.columns) == list(RANKING_COLUMNS)
    np.testing.assert_allclose(table["deletion_auc"], ranking.table["deletion_auc"])
    header = read_csv_provenance(data)
    assert header["model"]["name"] == "efficientnet_lite0" and header["image"]["sha256"] == "ab" * 32
    assert header["target"]["index"] == ranking.target
    expected = {"steps": STEPS, "baseline": "blur", "seed": 3, "target": ranking.target}
    assert expected.items() <= header["ranking"].items()
    assert header["saliency"]["reduction"] == "max" and header["saliency"]["precision"] == "exact"
    assert set(header["ranking"]["metrics"]) == set(RANKING_METRICS)
    assert header["ranking"]["metrics"]["sparseness"]["citation"] == get_metric("sparseness").citation
    maps = header["saliency"]["maps"]
    assert maps["SmoothGrad · score"]["params"] == {"samples": 2, "noise": 0.15, "seed": 1}
    assert maps["Grad-CAM · loss −L"]["explains"] == "−L" and maps["SmoothGrad · loss"]["explains"] == "L"
    assert maps["Grad-CAM · loss −L"]["objective"] == "loss" and maps["SmoothGrad · score"]["objective"] == "score"

    doc = json.loads(ranking_json(ranking, record(ranking)))  # strict JSON: NaN became null
    assert doc["provenance"] == json.loads(json.dumps(header))
    assert len(doc["table"]) == len(ranking.table) and doc["table"][0]["rank"] == 1
    assert any(row["randomised_spearman"] is None for row in doc["table"])
    assert len(doc["curves"]["Grad-CAM · score"]["deletion"]) == STEPS + 1


def test_downloads_refuse_a_record_that_does_not_match(ranked):
    _, ranking, _ = ranked
    with pytest.raises(InvalidInputError, match="precision"):
        ranking_csv(ranking, record(ranking, precision="fast"))
    with pytest.raises(InvalidInputError, match="sha256"):
        ranking_json(ranking, {"model": {"name": "x"}})
    assert ranking_filename("../My cat.png", "efficientnet_lite0", 281, "json") == \
        "methods_ranking_My_cat_png_efficientnet_lite0_target281.json"


def test_nothing_to_rank_raises(lite0, image):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 62 * 62, 4)).eval()
    comparison = compare_methods(net, image, 0, ["guided_backprop"])
    with pytest.raises(InvalidInputError, match="every method failed"):
        ranking_table(net, image, comparison)


# --------------------------------------------------------------------------- metrics that run the model, on request

SMALL_METRICS = ("road_morf", "random_logit")  # one of perturbed copies, one that recomputes each map


@pytest.fixture(scope="module")
def ranked_with_metrics(lite0, image):
    comparison = compare_methods(lite0, image, -1, ("gradient_x_input", "smoothgrad"), PARAMS)
    calls = []
    ranking = ranking_table(lite0, image, comparison, steps=STEPS, baseline="blur", seed=3, batch_size=64,
                            randomisation=False, metrics=SMALL_METRICS[::-1],  # asked in any order
                            progress=lambda d, t: calls.append((d, t)))
    return comparison, ranking, calls


def test_asked_metrics_are_more_columns_each_the_metric_of_its_map_with_its_method(lite0, image,
                                                                                  ranked_with_metrics):
    comparison, ranking, calls = ranked_with_metrics
    assert list(ranking.table.columns) == [*RANKING_COLUMNS, *SMALL_METRICS]  # METRICS' order
    judged = {label: metric_table.JudgedMap(m, obj, arr, sanity.fixed_params(m, comparison.runs[m].given,
                                                                            comparison.runs[m].params))
              for m, obj, label, arr in comparison.entries()}
    alone = metric_table.evaluate(lite0, image, comparison.target, judged, SMALL_METRICS, batch_size=64)
    rows = ranking.table.set_index("map")
    for label in judged:
        for name in SMALL_METRICS:
            assert rows.loc[label, name] == pytest.approx(alone[name][label], rel=1e-6, nan_ok=True), (label, name)
    assert rows.loc[RANDOM_ORDER, list(SMALL_METRICS)].isna().all()  # no map, no metric
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1]
    header = read_csv_provenance(ranking_csv(ranking, record(ranking)))
    assert set(header["ranking"]["metrics"]) == {*RANKING_METRICS, *SMALL_METRICS}
    assert header["ranking"]["metrics"]["road_morf"]["params"] == get_metric("road_morf").defaults()


def test_only_metrics_that_run_the_model_can_be_added(lite0, image, ranked):
    comparison, _, _ = ranked
    with pytest.raises(InvalidInputError, match=r"only metrics that run the model.*'pointing_game'"):
        ranking_table(lite0, image, comparison, steps=STEPS, randomisation=False, metrics=("pointing_game",))
