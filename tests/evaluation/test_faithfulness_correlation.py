"""Faithfulness correlation against Quantus 0.6.0 with the same subsets, and a linear model's known answer."""

import numpy as np
import pytest
import quantus
import torch
from conftest import quantus_arrays
from small_nets import Linear

from saliency_core.evaluation.metrics._common import image_seeds
from saliency_core.evaluation.metrics.faithfulness_correlation import faithfulness_correlation, image_subsets


def test_it_equals_quantus_given_the_same_subsets(data, net, monkeypatch):
    X, y, maps = data
    n, _, h, w = X.shape
    runs, k = 12, 20
    subsets = image_subsets(image_seeds(X, 3), runs, h * w, k)
    calls = iter(range(n * runs))

    def choice(features, size, replace=True):
        # Quantus draws among the 3·H·W features of the map broadcast to every channel, image by image in
        # each run: hand it our pixels, each in all three channels (its sums are 3x ours: r is unchanged).
        t = next(calls)
        s = subsets[t % n, t // n].numpy()
        assert features == 3 * h * w and size == 3 * k and not replace
        return np.concatenate([s, s + h * w, s + 2 * h * w])

    monkeypatch.setattr(np.random, "choice", choice)
    x, yy, a = quantus_arrays(X, y, maps)
    theirs = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=3 * k, perturb_baseline=0.0, normalise=False,
                                             abs=False, return_aggregate=False, disable_warnings=True)(
        model=net, x_batch=x, y_batch=yy, a_batch=a, device="cpu", softmax=False, batch_size=n)
    ours = faithfulness_correlation(net, X, y, maps, subset_size=k, runs=runs, seed=3, baseline="dataset_mean")
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_a_linear_models_weights_correlate_perfectly():
    # f = s_y = w_y · x + b with w_y equal over the channels; removing S (baseline 0) drops f by
    # Σ_{p in S} w_p Σ_c x_cp, so the map Φ_p = w_p Σ_c x_cp predicts every drop: r = 1.
    torch.manual_seed(0)
    model = Linear((3, 6, 6), 4).double().eval()
    v = torch.randn(4, 36, dtype=torch.float64)
    with torch.no_grad():
        model.fc.weight.copy_(v.repeat(1, 3))
    X = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([1, 3])
    maps = v[y].view(2, 6, 6) * X.sum(dim=1)
    r = faithfulness_correlation(model, X, y, maps, subset_size=5, runs=20)
    np.testing.assert_allclose(r, 1.0, atol=1e-12)
    assert faithfulness_correlation(model, X, y, -maps, subset_size=5, runs=20) == pytest.approx(-1.0)
