"""ROAD against Quantus 0.6.0: the imputation to 1e-10, the MoRF/LeRF accuracy curves on grey images; known
answers of the imputation (a linear ramp is harmonic) and of the noise."""

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.perturb_func import noisy_linear_imputation
from small_nets import smooth_net

from saliency_core.evaluation.metrics.road import linear_imputation, road


def test_the_imputation_equals_quantus_noise_free():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 11))
    removed = rng.permutation(99)[:40]
    theirs = noisy_linear_imputation(x, removed, noise=0.0).reshape(3, -1)[:, removed]
    np.testing.assert_allclose(linear_imputation(x, removed), theirs, rtol=1e-10, atol=1e-12)


def test_a_linear_ramp_is_imputed_exactly():
    # The 8-neighbour weighted mean of a linear function is its centre value, borders included (the
    # weights of missing neighbours drop out symmetrically only inside: keep the hole inside).
    r, c = np.meshgrid(np.arange(10.0), np.arange(12.0), indexing="ij")
    x = np.stack([2 * r - c, r + 3 * c, np.ones_like(r)])
    hole = np.zeros((10, 12), bool)
    hole[2:8, 3:9] = True
    removed = np.flatnonzero(hole)
    np.testing.assert_allclose(linear_imputation(x, removed), x.reshape(3, -1)[:, removed], atol=1e-10)


class Grey(torch.nn.Module):
    """One grey channel in, the net's three out: Quantus's ROAD ranks C·H·W features of a map broadcast to
    every channel and then indexes H·W pixels (an IndexError for 3 channels), so it is compared on grey
    images, where imputing one channel is imputing all three."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1))


def test_morf_and_lerf_accuracy_equal_quantus_on_grey_images():
    net = smooth_net()  # its top-1 changes as pixels go (relu_net's does not, at this size)
    g = torch.Generator().manual_seed(5)
    grey = torch.randn(6, 1, 16, 16, generator=g) * 3
    X = grey.expand(-1, 3, -1, -1).contiguous()
    y = net(X).argmax(dim=1).detach()
    maps = torch.rand(6, 16, 16, generator=g, dtype=torch.float64)
    pct = [10, 30, 50, 70, 90]
    ours = road(net, X, y, maps, percentages=pct, noise=0.0)
    assert 0 < ours.morf_correct.mean() < 1 and 0 < ours.lerf_correct.mean() < 1
    for ranking, curve in ((maps, ours.morf_correct), (1 - maps, ours.lerf_correct)):  # LeRF: reversed
        metric = quantus.ROAD(percentages=pct, noise=0.0, normalise=False, abs=False, disable_warnings=True,
                              return_aggregate=False)
        metric.custom_postprocess = lambda **_: None  # it averages over images: keep the (N, P) table
        metric(model=Grey(net).eval(), x_batch=grey.numpy(), y_batch=y.numpy(),
               a_batch=ranking.numpy()[:, None], device="cpu", batch_size=6)
        np.testing.assert_array_equal(metric.evaluation_scores[0], curve.astype(int))


def test_the_output_curves_follow_the_explained_quantity(net):
    g = torch.Generator().manual_seed(6)
    X = torch.randn(2, 3, 16, 16, generator=g)
    y = torch.tensor([1, 2])
    maps = torch.rand(2, 16, 16, generator=g)
    s = road(net, X, y, maps, percentages=[50], noise=0.0)
    lp = road(net, X, y, maps, percentages=[50], noise=0.0, output="−L")
    loss = road(net, X, y, maps, percentages=[50], noise=0.0, output="L")
    np.testing.assert_allclose(lp.morf, -loss.morf)
    assert np.all(lp.morf <= 0) and not np.allclose(s.morf, lp.morf)


def test_the_noise_is_seeded_and_has_the_asked_std(net):
    g = torch.Generator().manual_seed(7)
    X = torch.randn(1, 3, 16, 16, generator=g)
    maps = torch.rand(1, 16, 16, generator=g)
    a = road(net, X, [0], maps, percentages=[90], noise=0.05, seed=1).morf
    b = road(net, X, [0], maps, percentages=[90], noise=0.05, seed=1).morf
    c = road(net, X, [0], maps, percentages=[90], noise=0.05, seed=2).morf
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


@pytest.mark.parametrize("bad", [[0], [100], []])
def test_percentages_must_lie_inside_zero_and_a_hundred(net, bad):
    from saliency_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="percentages"):
        road(net, torch.zeros(1, 3, 8, 8), [0], torch.zeros(1, 8, 8), percentages=bad)
