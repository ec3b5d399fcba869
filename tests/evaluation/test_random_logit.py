"""Random logit against Quantus 0.6.0 given the same off classes and the 2-D SSIM, and its known answer."""

import numpy as np
import quantus
import torch
from conftest import gradient_explainer, quantus_arrays
from small_nets import Linear

from saliency_core.evaluation.metrics._common import image_seeds
from saliency_core.evaluation.metrics.random_logit import image_other_classes, map_ssim, random_logit


def test_random_logit_equals_quantus_given_the_same_draws(data, net, monkeypatch):
    X, y, maps = data
    n, _, h, w = X.shape
    off = image_other_classes(y, 7, image_seeds(X, 5))
    assert torch.all(off != y)
    # Quantus draws an index among the other classes (np.random.randint(0, C - 1, N)): hand it ours.
    monkeypatch.setattr(np.random, "randint", lambda lo, hi, size: (off - (off > y).long()).numpy())

    def ssim2d(a, b, batched=True, **_):
        # Quantus's default SSIM runs over the maps flattened to 1-D; ours compares them as images.
        return [map_ssim(u.reshape(h, w), v.reshape(h, w)) for u, v in zip(a, b, strict=True)]

    x, yy, a = quantus_arrays(X, y, maps)
    theirs = quantus.RandomLogit(num_classes=7, similarity_func=ssim2d, normalise=False, abs=False,
                                 disable_warnings=True)(model=net, x_batch=x, y_batch=yy, a_batch=a, device="cpu",
                                                        explain_func=gradient_explainer(), batch_size=n)
    ours = random_logit(net, X, y, maps, "gradient", seed=5)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.all(ours < 1)


def test_a_map_that_ignores_the_class_scores_one():
    torch.manual_seed(3)
    model = Linear((3, 8, 8), 4).eval()
    with torch.no_grad():
        model.fc.weight.copy_(model.fc.weight[:1].repeat(4, 1))  # every class the same weights
    X = torch.randn(2, 3, 8, 8)
    y = torch.tensor([0, 1])
    from saliency_core.methods.registry import attribute

    maps = attribute(model, X, y, "gradient", ("score",)).maps["score"]
    np.testing.assert_allclose(random_logit(model, X, y, maps, "gradient"), 1.0, atol=1e-6)
