"""Max- and average-sensitivity against Quantus 0.6.0 given the same noise, and a linear model's answer."""

import numpy as np
import quantus
import torch
from conftest import gradient_explainer, quantus_arrays
from small_nets import Linear

from saliency_core.evaluation.metrics._common import image_seeds
from saliency_core.evaluation.metrics.sensitivity import sensitivity, uniform_noise


def test_max_and_average_sensitivity_equal_quantus_given_the_same_noise(data, net, monkeypatch):
    X, y, maps = data
    n, c, h, w = X.shape
    samples, radius = 4, 0.2
    draws = {"k": 0}
    seeds = image_seeds(X, 0).tolist()

    def uniform(low, high, size):
        # Quantus draws (N, 3·H·W) per sample, every image at once: ours is image i's draw k.
        k = draws["k"]
        draws["k"] += 1
        assert low == -radius and high == radius and size == (n, c * h * w)
        return torch.stack([uniform_noise(seeds[i], k, (c, h, w), radius) for i in range(n)]).view(n, -1
                                                                                                          ).numpy()

    ours = sensitivity(net, X, y, maps, "gradient", samples=samples, radius=radius)
    x, yy, a = quantus_arrays(X, y, maps)
    for cls, expected in ((quantus.MaxSensitivity, ours.max), (quantus.AvgSensitivity, ours.mean)):
        draws["k"] = 0
        monkeypatch.setattr(np.random, "uniform", uniform)
        theirs = cls(nr_samples=samples, lower_bound=radius, normalise=False, abs=False, return_aggregate=False,
                     disable_warnings=True)(model=net, x_batch=x, y_batch=yy, a_batch=a, device="cpu",
                                            explain_func=gradient_explainer(), batch_size=n)
        monkeypatch.undo()
        np.testing.assert_allclose(expected, theirs, rtol=1e-5)
    assert np.all(ours.max > 0)


def test_a_linear_models_gradient_does_not_move():
    torch.manual_seed(2)
    model = Linear((3, 6, 6), 4).eval()
    X = torch.randn(2, 3, 6, 6)
    y = torch.tensor([0, 3])
    from saliency_core.methods.registry import attribute

    maps = attribute(model, X, y, "gradient", ("score",)).maps["score"]
    r = sensitivity(model, X, y, maps, "gradient", samples=3, radius=0.5)
    np.testing.assert_allclose(r.max, 0.0, atol=1e-7)
    # Gradient x input moves with the input: the same noise shows it.
    maps = attribute(model, X, y, "gradient_x_input", ("score",)).maps["score"]
    from saliency_core.evaluation.metrics._common import Recompute

    assert np.all(sensitivity(model, X, y, maps, Recompute("gradient_x_input"), samples=3).max > 0.01)
