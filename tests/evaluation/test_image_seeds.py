"""Seeded draws follow the image, not its place in the batch: the same image gives the same value alone,
first or last in a batch, and beside a copy of itself."""

import copy

import numpy as np
import pytest
import torch

from saliency_core.evaluation.metrics._common import image_seeds
from saliency_core.evaluation.metrics.faithfulness_correlation import faithfulness_correlation
from saliency_core.evaluation.metrics.infidelity import infidelity
from saliency_core.evaluation.metrics.random_logit import random_logit
from saliency_core.evaluation.metrics.road import road
from saliency_core.evaluation.metrics.sensitivity import sensitivity

SEEDED = {
    "faithfulness_correlation": lambda net, X, y, m: faithfulness_correlation(net, X, y, m, subset_size=20, runs=6,
                                                                               seed=4),
    "infidelity_noise": lambda net, X, y, m: infidelity(net, X, y, m, samples=4, seed=4),
    "infidelity_square": lambda net, X, y, m: infidelity(net, X, y, m, perturbation="square", patch=5, samples=4,
                                                         seed=4),
    "road_morf": lambda net, X, y, m: road(net, X, y, m, percentages=[20, 60], noise=0.1, seed=4).morf,
    "road_lerf": lambda net, X, y, m: road(net, X, y, m, percentages=[20, 60], noise=0.1, seed=4).lerf,
    "max_sensitivity": lambda net, X, y, m: sensitivity(net, X, y, m, "gradient", samples=3, seed=4).max,
    "random_logit": lambda net, X, y, m: random_logit(net, X, y, m, "gradient", seed=4),
}


def test_an_images_seed_depends_on_the_image_and_the_seed_only(data):
    X, _, _ = data
    seeds = image_seeds(X, 0)
    assert seeds.tolist() == image_seeds(X.flip(0), 0).flip(0).tolist()
    assert image_seeds(X[2:3], 0).tolist() == [int(seeds[2])]
    assert len(set(seeds.tolist())) == len(X)
    assert not set(seeds.tolist()) & set(image_seeds(X, 1).tolist())
    assert image_seeds(X[:1] + 1e-6, 0).tolist() != [int(seeds[0])]


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_the_same_image_gets_the_same_value_alone_and_in_any_batch(data, net, name):
    # In float64, so that a batch's size does not move the model's outputs (float32 convolutions differ by
    # ~1e-7 between batch sizes): what is left to differ is the draws.
    X, y, maps = data
    X, net = X.double(), copy.deepcopy(net).double().eval()
    run = SEEDED[name]
    whole = np.asarray(run(net, X, y, maps))
    for i in range(len(X)):
        alone = np.asarray(run(net, X[i:i + 1], y[i:i + 1], maps[i:i + 1]))
        np.testing.assert_allclose(alone, whole[i:i + 1], rtol=1e-9, atol=1e-12, err_msg=f"image {i}")
    order = torch.tensor([3, 0, 2, 1])
    np.testing.assert_allclose(np.asarray(run(net, X[order], y[order], maps[order])), whole[order.numpy()],
                               rtol=1e-9, atol=1e-12)
    twice = np.asarray(run(net, X[[1, 1]], y[[1, 1]], maps[[1, 1]]))
    np.testing.assert_allclose(twice, whole[[1, 1]], rtol=1e-9, atol=1e-12)
