"""evaluate(): several metrics sharing one clean pass give what each gives alone, with one progress total."""

import copy

import numpy as np
import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import METRICS, get_metric
from saliency_core.evaluation.metrics._common import Recompute
from saliency_core.evaluation.metrics.evaluate import evaluate

SMALL = {"road_morf": {"steps": 3, "noise": 0.05}, "road_lerf": {"steps": 3, "noise": 0.05},
         "faithfulness_correlation": {"subset_size": 20, "runs": 5}, "infidelity": {"samples": 4},
         "max_sensitivity": {"samples": 3}, "avg_sensitivity": {"samples": 3}}


def alone(name, net, X, y, maps, mask, params):
    m = get_metric(name)
    p = m.resolve(params)
    if "method" in m.needs:
        return m.run(net, X, y, maps, Recompute("gradient"), **p)
    if "model" in m.needs:
        return m.run(net, X, y, maps, **p)
    return m.run(maps, mask, **p) if "mask" in m.needs else m.run(maps, **p)


@pytest.fixture(scope="module")
def double(data, net):
    # float64: a chunk's other rows do not move a row's output, so "the same" can mean to 1e-12.
    X, y, maps = data
    mask = torch.zeros(X.shape[0], 16, 16, dtype=torch.bool)
    mask[:, 4:12, 3:10] = True
    return copy.deepcopy(net).double().eval(), X.double(), y, maps, mask


def test_every_metric_at_once_equals_each_alone(double):
    net, X, y, maps, mask = double
    seen = []
    got = evaluate(net, X, y, maps, [(m.name, SMALL.get(m.name)) for m in METRICS], recompute="gradient",
                   mask=mask, progress=lambda d, t: seen.append((d, t)))
    assert list(got) == [m.name for m in METRICS]
    for m in METRICS:
        np.testing.assert_allclose(got[m.name], alone(m.name, net, X, y, maps, mask, SMALL.get(m.name)),
                                   rtol=1e-12, atol=1e-15, err_msg=m.name)
    # One total: ROAD 2 orders x 3 steps, 5 runs, 4 samples, 3 sensitivity samples, 1 random logit per image.
    total = 4 * (6 + 5 + 4 + 3 + 1)
    assert {t for _, t in seen} == {total} and seen[-1][0] == total
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_shared_pieces_run_once(double, monkeypatch):
    net, X, y, maps, _ = double
    from saliency_core.evaluation.metrics import _common

    calls = {"clean": 0, "maps": 0}
    real_clean, real_maps = _common.clean_pass, _common.Recompute.maps

    def counting_clean(*a, **k):
        calls["clean"] += 1
        return real_clean(*a, **k)

    def counting_maps(self, *a, **k):
        calls["maps"] += 1
        return real_maps(self, *a, **k)

    import saliency_core.evaluation.metrics.evaluate as ev

    monkeypatch.setattr(ev, "clean_pass", counting_clean)
    monkeypatch.setattr(_common.Recompute, "maps", counting_maps)
    evaluate(net, X, y, maps, ["max_sensitivity", ("avg_sensitivity", {}), "road_morf", "road_lerf"],
             recompute="gradient")
    assert calls == {"clean": 1, "maps": 1}  # one block of 4 x 10 noisy maps, shared by both sensitivities


def test_different_parameters_are_not_shared(double):
    net, X, y, maps, _ = double
    got = evaluate(net, X, y, maps, {"max_sensitivity": {"samples": 2}, "avg_sensitivity": {"samples": 3}},
                   recompute="gradient")
    np.testing.assert_allclose(got["avg_sensitivity"], alone("avg_sensitivity", net, X, y, maps, None,
                                                             {"samples": 3}), rtol=1e-12)


@pytest.mark.parametrize(("metrics", "kwargs", "message"), [
    (["nope"], {}, "Unknown metric 'nope'"),
    ([], {}, "at least one"),
    (["sparseness", "sparseness"], {}, "once"),
    (["random_logit"], {}, "recompute="),
    (["pointing_game"], {}, "mask="),
    ([("infidelity", {"samples": 0})], {}, "samples"),
    ([("road_morf", {"colour": 1})], {}, "unknown colour"),
])
def test_bad_requests_name_the_problem(double, metrics, kwargs, message):
    net, X, y, maps, _ = double
    with pytest.raises(InvalidInputError, match=message):
        evaluate(net, X, y, maps, metrics, **kwargs)
