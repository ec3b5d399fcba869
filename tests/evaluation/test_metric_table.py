"""metric_table: the Faithfulness page's metrics of several maps of one image, each as the metric gives it alone,
shared runs once, and the table they make."""

import copy
import math

import numpy as np
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation import metric_table
from saliency_core.evaluation.metric_table import JudgedMap, evaluate, metric_cost, runs_of
from saliency_core.evaluation.metrics import METRICS, get_metric
from saliency_core.evaluation.metrics._common import Recompute, output_for
from saliency_core.methods.registry import attribute

SMALL = {"road_morf": {"steps": 3, "noise": 0.05}, "road_lerf": {"steps": 3, "noise": 0.05},
         "faithfulness_correlation": {"subset_size": 20, "runs": 4}, "infidelity": {"samples": 3},
         "max_sensitivity": {"samples": 3}, "avg_sensitivity": {"samples": 3}}


@pytest.fixture(scope="module")
def one_image(net, data):
    """The first image of the metric tests' data, its target, its score and loss gradient maps, and a mask."""
    X, y, _ = data
    x, target = X[:1], int(y[0])
    r = attribute(net, x, [target], "gradient", ("score", "loss"))
    maps = {f"gradient · {o}": JudgedMap("gradient", o, r.maps[o][0].numpy()) for o in ("score", "loss")}
    mask = np.zeros((16, 16), dtype=bool)
    mask[3:11, 5:12] = True
    return x, target, maps, mask


def test_runs_of_lists_shared_runs_once_in_the_registry_order():
    names = ["avg_sensitivity", "sparseness", "road_lerf", "max_sensitivity", "road_morf"]
    runs = runs_of(names)
    order = [m.name for m in METRICS]
    assert dict(runs)["road"] == ("road_morf", "road_lerf")  # both orders, as METRICS lists them
    assert dict(runs)["sensitivity"] == ("max_sensitivity", "avg_sensitivity")
    assert [r for r, _ in runs] == sorted(dict(runs), key=lambda r: order.index(dict(runs)[r][0]))
    assert runs_of(["road_lerf"]) == [("road", ("road_lerf",))]  # one order asked: one order run
    assert runs_of([]) == []


def test_metric_cost_counts_what_runs():
    cost = {n: get_metric(n).cost_for(None) for n in ("road_morf", "road_lerf", "max_sensitivity",
                                                      "avg_sensitivity", "infidelity", "sparseness")}
    both = metric_cost(["road_morf", "road_lerf", "max_sensitivity", "avg_sensitivity", "infidelity",
                        "sparseness"])
    # ROAD's orders each run their own rows; the two sensitivities share theirs; sparseness runs nothing.
    assert both.forward == (cost["road_morf"].forward + cost["road_lerf"].forward
                            + cost["max_sensitivity"].forward + cost["infidelity"].forward)
    assert both.attributions == cost["max_sensitivity"].attributions
    assert metric_cost(["sparseness", "complexity", "pointing_game"]) == metric_cost([])
    assert metric_cost(["infidelity"], {"infidelity": {"samples": 7}}).forward \
        == get_metric("infidelity").cost_for({"samples": 7}).forward


def test_every_metric_of_every_map_is_what_the_metric_gives_alone(net, one_image):
    x, target, maps, mask = one_image
    # float64: a chunk's other rows do not move a row's output, so "the same" can mean to 1e-9.
    net, x = copy.deepcopy(net).double().eval(), x.double()
    seen = []
    got = evaluate(net, x, target, maps, [m.name for m in METRICS], mask=mask, params=SMALL,
                   progress=lambda d, t: seen.append((d, t)))
    assert list(got) == [m.name for m in METRICS]
    for m in METRICS:
        p = m.resolve(SMALL.get(m.name))
        for label, judged in maps.items():
            a = torch.as_tensor(judged.map, dtype=torch.float64)[None]
            if "method" in m.needs:
                alone = m.run(net, x, [target], a, Recompute("gradient", judged.objective), **p)
            elif "model" in m.needs:
                alone = m.run(net, x, [target], a, output=output_for("gradient", judged.objective), **p)
            elif "mask" in m.needs:
                alone = m.run(a, torch.as_tensor(mask)[None], **p)
            else:
                alone = m.run(a, **p)
            np.testing.assert_allclose(got[m.name][label], np.asarray(alone)[0], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{m.name} of {label}")
    model_runs = sum("model" in get_metric(members[0]).needs for _, members in runs_of([m.name for m in METRICS]))
    total = 1000 * model_runs * len(maps)
    assert seen and {t for _, t in seen} == {total} and seen[-1][0] == total
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_map_only_and_localisation_metrics_need_no_model(one_image):
    _, _, maps, mask = one_image
    got = evaluate(None, None, None, maps, ["sparseness", "pointing_game"], mask=mask)
    for label, judged in maps.items():
        a = torch.as_tensor(judged.map, dtype=torch.float64)[None]
        assert got["sparseness"][label] == pytest.approx(float(get_metric("sparseness").run(a)[0]))
        hit = get_metric("pointing_game").run(a, torch.as_tensor(mask)[None])[0]
        assert got["pointing_game"][label] == float(hit)


@pytest.mark.parametrize(("names", "kwargs", "message"), [
    (["pointing_game"], {}, "object mask"),
    (["infidelity"], {}, "need the model"),
    (["no_such_metric"], {}, "no_such_metric"),
])
def test_bad_requests_name_what_is_missing(one_image, names, kwargs, message):
    _, _, maps, _ = one_image
    with pytest.raises(InvalidInputError, match=message):
        evaluate(None, None, None, maps, names, **kwargs)


def test_the_table_has_a_row_per_metric_in_registry_order_and_nan_where_a_map_has_no_score():
    scores = {"complexity": {"a": 2.5}, "sparseness": {"a": 0.25, "b": 0.75}}
    table = metric_table.metric_table(scores, ["a", "b"])
    assert list(table.columns) == ["metric", "a", "b", "better", "good", "paper", "name"]
    order = [m.name for m in METRICS if m.name in scores]
    assert list(table["name"]) == order
    row = table.set_index("name").loc["complexity"]
    assert row["a"] == 2.5 and math.isnan(row["b"])
    assert row["metric"] == get_metric("complexity").title and row["better"] == get_metric("complexity").better
    assert row["paper"] == get_metric("complexity").citation
    empty = metric_table.metric_table({}, ["a"])
    assert list(empty.columns) == ["metric", "a", "better", "good", "paper", "name"] and empty.empty
