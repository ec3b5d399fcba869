"""Integrated Gradients (Sundararajan et al. 2017): closed forms, quadrature rules, completeness, and Captum."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from saliency_core import attribute
from saliency_core.methods.integrated_gradients import path_rule
from tests.methods.oracles import black, inputs, oracle
from tests.methods.small_nets import Linear, batch, smooth_net


def test_integrated_gradients_of_a_linear_score_is_input_times_weights_with_no_gap():
    torch.manual_seed(3)
    model = Linear().eval()
    X = torch.randn(4, 3, 4, 6)
    y = torch.tensor([0, 4, 2, 2])
    base = torch.randn_like(X)
    W = model.fc.weight.detach().view(5, 3, 4, 6)
    for rule, steps in (("trapezoid", 2), ("gauss_legendre", 2), ("gauss_legendre", 5)):
        r = attribute(model, X, y, "integrated_gradients", ("score",), steps=steps, rule=rule, baseline=base)
        torch.testing.assert_close(r.attributions["score"], (X - base) * W[y], rtol=1e-5, atol=1e-6)
        assert float(r.convergence["score"].abs().max()) < 1e-4


def test_quadrature_rules_weights_sum_to_one_and_the_trapezoid_is_true():
    alphas, weights = path_rule("trapezoid", 5)
    assert alphas.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert weights.tolist() == [0.125, 0.25, 0.25, 0.25, 0.125]
    alphas, weights = path_rule("gauss_legendre", 3)
    assert weights.sum() == pytest.approx(1)
    assert (weights * alphas**5).sum() == pytest.approx(1 / 6)  # exact up to degree 2n - 1


@pytest.mark.parametrize("rule", ["trapezoid", "gauss_legendre"])
def test_completeness_gap_shrinks_as_steps_grow_and_warns_when_large(rule):
    model = smooth_net()
    X, y = batch(n=2, size=16)
    X = 3 * X  # a long path, so few steps are visibly off
    gaps = []
    for steps in (2, 4, 16):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = attribute(model, X, y, "integrated_gradients", steps=steps, rule=rule, baseline="dataset_mean")
        worst = max(float(c.abs().max()) for c in r.convergence.values())
        warned = any("completeness gap" in str(w.message) for w in caught)
        assert warned == (worst > 0.1), (steps, worst)
        gaps.append(worst)
    assert gaps[0] > 0.1 and gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01, gaps


def test_integrated_gradients_loss_sums_to_the_drop_in_loss():
    model = smooth_net()
    X, y = batch(n=2)
    r = attribute(model, X, y, "integrated_gradients", steps=64, rule="gauss_legendre", baseline="dataset_mean")
    with torch.no_grad():
        minus_loss = -F.cross_entropy(model(X), r.targets, reduction="none")
        minus_loss0 = -F.cross_entropy(model(torch.zeros_like(X)), r.targets, reduction="none")
    torch.testing.assert_close(r.attributions["loss"].sum(dim=(1, 2, 3)), minus_loss - minus_loss0,
                               rtol=1e-4, atol=1e-5)


def test_integrated_gradients_gauss_legendre_equals_captum(nets):
    from captum.attr import IntegratedGradients

    model = nets["resnet18"]
    X, y = inputs(size=32)
    baseline = black(X)
    r = attribute(model, X, y, "integrated_gradients", steps=16, rule="gauss_legendre", baseline=baseline)
    for obj in ("score", "loss"):
        ref, delta = IntegratedGradients(oracle(model, obj)).attribute(
            X.clone(), baselines=baseline, target=y, n_steps=16, method="gausslegendre",
            return_convergence_delta=True)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-4, atol=1e-6)
        # Captum's delta is Σ IG − (f(x) − f(x′)); ours is the same, relative to |f(x) − f(x′)|.
        f = oracle(model, obj)
        with torch.no_grad():
            change = (f(X) - f(baseline)).gather(1, y[:, None]).squeeze(1)
        torch.testing.assert_close(r.convergence[obj] * change.abs(), delta, rtol=1e-3, atol=1e-4)


def test_true_trapezoid_is_captum_riemann_trapezoid_times_n_over_n_minus_1(nets):
    """Captum's step sizes are 1/n with half ends, summing to (n − 1)/n; ours are 1/(n − 1): a true trapezoid."""
    from captum.attr import IntegratedGradients

    model = nets["squeezenet1_1"]
    X, y = inputs()
    n = 8
    r = attribute(model, X, y, "integrated_gradients", steps=n, rule="trapezoid", baseline="dataset_mean")
    for obj in ("score", "loss"):
        ref = IntegratedGradients(oracle(model, obj)).attribute(
            X.clone(), baselines=torch.zeros_like(X), target=y, n_steps=n, method="riemann_trapezoid")
        torch.testing.assert_close(r.attributions[obj], ref * n / (n - 1), rtol=1e-4, atol=1e-6)
        # ... and not equal to Captum's own numbers: the factor is visible.
        assert not torch.allclose(r.attributions[obj], ref, rtol=1e-2, atol=1e-6)
