"""VarGrad (Adebayo et al. 2018): the population variance over SmoothGrad's noisy copies, Captum's
NoiseTunnel(nt_type="vargrad") on the same copies, and against NoiseTunnel's own draws statistically.

Captum computes the variance as E[g²] − E[g]² over the S samples: the population variance (÷ S), which is
what this method returns too (not the sample variance, ÷ S − 1). Its formula cancels where the variance is
small against the mean; ours merges the rows' moments pairwise, so it is compared with Captum to 1e-5 of the
largest value, and with a float64 two-pass variance to rounding.
"""

from __future__ import annotations

import pytest
import torch

from saliency_core import attribute
from saliency_core.methods.vargrad import Moments
from tests.methods.oracles import inputs, oracle, spearman
from tests.methods.small_nets import batch, relu_net
from tests.methods.test_smoothgrad_sq import gradients_at_copies, noise_tunnel_on_our_copies


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_vargrad_equals_noise_tunnel_on_the_same_copies(nets, name, monkeypatch):
    model = nets[name]
    X, y = inputs(size=32)
    samples, noise, seed = 6, 0.2, 3
    r = attribute(model, X, y, "vargrad", samples=samples, noise=noise, seed=seed, max_batch=4)
    for obj in ("score", "loss"):
        ref = noise_tunnel_on_our_copies(oracle(model, obj), X, y, "vargrad", samples, noise, seed, monkeypatch)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_vargrad_is_the_population_variance_and_sg_sq_minus_sg_squared():
    """The three noise methods share their copies: with the same samples, noise and seed,
    VarGrad = SmoothGrad² − SmoothGrad² of the mean, to rounding (float64)."""
    model = relu_net().double()
    X, y = batch(n=3)
    samples, noise, seed = 7, 0.3, 5
    options = dict(samples=samples, noise=noise, seed=seed, max_batch=4)  # chunks split the images' rows
    r = attribute(model, X.double(), y, "vargrad", **options)
    sq = attribute(model, X.double(), y, "smoothgrad_sq", **options)
    mean = attribute(model, X.double(), y, "smoothgrad", **options)
    for obj in ("score", "loss"):
        g = gradients_at_copies(model, X, r.targets, samples, noise, seed, obj)
        torch.testing.assert_close(r.attributions[obj], g.var(dim=1, correction=0), rtol=1e-9, atol=1e-14)
        torch.testing.assert_close(r.attributions[obj], sq.attributions[obj] - mean.attributions[obj].square(),
                                   rtol=1e-7, atol=1e-12)
        assert bool((r.attributions[obj] >= 0).all())


def test_without_noise_vargrad_is_zero():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "vargrad", samples=4, noise=0.0)
    for obj in ("score", "loss"):
        assert float(r.attributions[obj].abs().max()) < 1e-12


def test_moments_do_not_cancel_where_the_variance_is_small():
    """Rows of mean 1000 and standard deviation 0.05, in float32: E[g²] − E[g]² loses every digit (float32
    carries about 7, the variance starts at the 9th), the pairwise merge keeps all but the last, in chunks of
    any size."""
    g = torch.Generator().manual_seed(0)
    rows = (1000 + 0.05 * torch.randn(2 * 12, 3, 2, 2, generator=g, dtype=torch.float64)).float()
    truth = rows.double().view(2, 12, 3, 2, 2).var(dim=1, correction=0)  # of the float32 rows, exactly
    for chunk in (1, 5, 12, 24):
        m = Moments(torch.zeros(2, 3, 2, 2))
        for start in range(0, 24, chunk):
            m.add(start, min(start + chunk, 24), 12, rows[start:start + chunk])
        torch.testing.assert_close(m.variance().double(), truth, rtol=1e-2, atol=0)
    naive = rows.view(2, 12, 3, 2, 2).square().mean(1) - rows.view(2, 12, 3, 2, 2).mean(1) ** 2
    assert not torch.allclose(naive.double(), truth, rtol=0.5)


def test_both_methods_agree_with_noise_tunnels_own_draws_statistically(nets):
    """Independent draws (Captum's from torch's generator, ours from the seed): 200 copies each, 32 x 32. The
    channel-max maps rank pixels alike (Spearman > 0.95; measured 0.993 and 0.992) and the estimates are close
    in L2 (relative difference below 0.25; measured 0.14 for both), far closer than to the squared plain
    gradient (Spearman 0.74 and 0.73)."""
    from captum.attr import NoiseTunnel, Saliency

    model = nets["resnet18"]
    X, y = inputs(n=1, size=32)
    noise, samples = 0.15, 200
    sigma = float(noise * (X.max() - X.min()))
    plain = attribute(model, X, y, "gradient", ("score",)).attributions["score"].square()
    torch.manual_seed(7)
    for method, nt_type in (("smoothgrad_sq", "smoothgrad_sq"), ("vargrad", "vargrad")):
        ours = attribute(model, X, y, method, ("score",), samples=samples, noise=noise, max_batch=100)
        theirs = NoiseTunnel(Saliency(model)).attribute(X.clone(), nt_type=nt_type, nt_samples=samples,
                                                        nt_samples_batch_size=100, stdevs=sigma, target=y,
                                                        abs=False)
        a = ours.attributions["score"]
        assert spearman(ours.maps["score"], theirs.amax(dim=1)) > 0.95
        assert float((a - theirs).norm() / theirs.norm()) < 0.25
        assert spearman(ours.maps["score"], plain.amax(dim=1)) < spearman(ours.maps["score"], theirs.amax(dim=1))
