"""The metrics registry: every declaration is complete and reachable by name, and each declared cost is
what the metric really runs (forward rows counted on the model, attribution calls on Recompute)."""

import copy

import pytest
import torch

from saliency_core.errors import InvalidInputError
from saliency_core.evaluation.metrics import EVALUATION_METRICS, METRICS, Metric, MetricCost, get_metric
from saliency_core.evaluation.metrics._common import Recompute
from saliency_core.evaluation.metrics.declaration import NEEDS


def test_every_metric_is_declared_once_and_found_by_name():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)) == 12
    assert list(EVALUATION_METRICS) == names
    for m in METRICS:
        assert isinstance(m, Metric) and get_metric(m.name) is m
        assert m.title and m.citation and m.good and callable(m.run)
        assert set(m.needs) <= set(NEEDS)
        assert isinstance(m.cost_for(), MetricCost)
        assert m.resolve() == m.defaults()


@pytest.mark.parametrize("bad", ["Sparseness", "", None, 3, "road"])
def test_an_unknown_name_lists_the_known_ones(bad):
    with pytest.raises(InvalidInputError, match="Known metrics: road_morf, road_lerf"):
        get_metric(bad)


def test_parameters_are_checked_by_name():
    with pytest.raises(InvalidInputError, match="unknown"):
        get_metric("sparseness").resolve({"steps": 3})
    with pytest.raises(InvalidInputError, match="runs"):
        get_metric("faithfulness_correlation").resolve({"runs": 1})
    with pytest.raises(InvalidInputError, match="baseline"):
        get_metric("faithfulness_correlation").resolve({"baseline": "purple"})


class Counter:
    """Counts the rows of the model's forward passes without gradients, and the images of recomputed maps."""

    def __init__(self, net, monkeypatch):
        self.forward = self.attributed = 0
        self.net = copy.deepcopy(net)
        self.net.register_forward_pre_hook(self._hook)
        real = Recompute.maps

        def maps(recompute, model, X, y, precision):
            self.attributed += X.shape[0]
            return real(recompute, model, X, y, precision)

        monkeypatch.setattr(Recompute, "maps", maps)

    def _hook(self, _module, args):
        if not torch.is_grad_enabled():
            self.forward += args[0].shape[0]


PARAMS = {"road_morf": {"steps": 3}, "road_lerf": {"steps": 2}, "faithfulness_correlation": {"runs": 4,
          "subset_size": 10}, "infidelity": {"samples": 3}, "max_sensitivity": {"samples": 2},
          "avg_sensitivity": {"samples": 3}, "random_logit": {}}


@pytest.mark.parametrize("name", [m.name for m in METRICS])
def test_the_declared_cost_is_what_runs(data, net, monkeypatch, name):
    X, y, maps = data
    m = get_metric(name)
    count = Counter(net, monkeypatch)
    params = m.resolve(PARAMS.get(name))
    if "method" in m.needs:
        m.run(count.net, X, y, maps, Recompute("gradient"), **params)
    elif "model" in m.needs:
        m.run(count.net, X, y, maps, **params)
    elif "mask" in m.needs:
        m.run(maps, torch.ones_like(maps, dtype=torch.bool), **params)
    else:
        m.run(maps, **params)
    n = X.shape[0]
    cost = m.cost_for(PARAMS.get(name))
    assert (count.forward, count.attributed) == (n * cost.forward, n * cost.attributions)
