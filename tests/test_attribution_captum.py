"""Attribution methods against Captum, an oracle no one here wrote.

Small torchvision models with random weights and 64 x 64 inputs keep this
fast. The loss objective is compared as −L: Captum explains a forward
function's output, so ``log_softmax`` (whose target entry is −L) stands in
for the model where our method uses −L.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from saliency_core.core.gradients import compute_saliency
from saliency_core.inputs.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from saliency_core.methods.registry import attribute


@pytest.fixture(scope="module")
def nets():
    import torchvision

    torch.manual_seed(0)
    return {
        "resnet18": torchvision.models.resnet18(weights=None).eval(),
        "squeezenet1_1": torchvision.models.squeezenet1_1(weights=None).eval(),
    }


class LogSoftmax(torch.nn.Module):
    """The model followed by log_softmax: output[:, y] = log p_y = −L. A module, so Captum finds its ReLUs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return F.log_softmax(self.model(x), dim=1)


def inputs(n: int = 2, size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.tensor([1, 250, 999, 7][:n])


def black(X: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((0 - mean) / std).expand_as(X).clone()


def oracle(model: torch.nn.Module, objective: str) -> torch.nn.Module:
    return model if objective == "score" else LogSoftmax(model)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_gradient_x_input_equals_captum_input_x_gradient(nets, name):
    from captum.attr import InputXGradient

    model = nets[name]
    X, y = inputs()
    r = attribute(model, X, y, "gradient_x_input")
    assert r.params == {"baseline": "dataset_mean"}
    for obj in ("score", "loss"):
        ref = InputXGradient(oracle(model, obj)).attribute(X.clone(), target=y)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-7)


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


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_guided_backprop_equals_captum_guided_backprop(nets, name):
    from captum.attr import GuidedBackprop

    model = nets[name]
    X, y = inputs()
    r = attribute(model, X, y, "guided_backprop")
    for obj in ("score", "loss"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum announces the hooks it sets
            ref = GuidedBackprop(oracle(model, obj)).attribute(X.clone(), target=y)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-7)
    # Guided, not plain: the plain gradient differs.
    plain = compute_saliency(model, X, y, ("score",)).gradients["score"]
    assert not torch.allclose(r.attributions["score"], plain, rtol=1e-2, atol=1e-6)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("name, layer", [("resnet18", "layer4"), ("squeezenet1_1", "features.12")])
def test_grad_cam_equals_captum_layer_grad_cam_with_bilinear_upsampling(nets, name, layer):
    from captum.attr import LayerAttribution, LayerGradCam

    model = nets[name]
    X, y = inputs(size=96)
    r = attribute(model, X, y, "grad_cam", layer=layer)
    assert r.params == {"layer": layer}
    for obj in ("score", "loss"):
        f = oracle(model, obj)
        coarse = LayerGradCam(f, f.get_submodule(layer if obj == "score" else "model." + layer)).attribute(
            X.clone(), target=y, relu_attributions=True)
        ref = LayerAttribution.interpolate(coarse, (96, 96), interpolate_mode="bilinear")
        assert r.attributions[obj].shape == (2, 1, 96, 96)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r.maps[obj], ref[:, 0], rtol=1e-5, atol=1e-6)
        assert float(ref.detach().amax()) > 0  # a map that is not all zeros


def test_smoothgrad_agrees_with_captum_noise_tunnel_statistically(nets):
    """Two independent 200-sample estimates of the same expectation differ only by sampling noise.

    Captum draws its noise from torch's global generator, so the maps
    cannot be equal. With the same σ (noise × (max − min of x)), each
    element of the difference of the two signed means should be about
    N(0, 2 Var/S), with Var the per-element variance of the gradient under
    the noise (Captum's VarGrad, a third independent run). So the mean of
    z² must be close to 1 (measured 1.03; a SmoothGrad with half the σ gives
    6.2, the plain gradient 91) and |z| > 4 must be rare. The channel-max
    maps then rank pixels alike: Spearman > 0.9 (measured 0.95; the plain
    gradient 0.64). 32 x 32 keeps the 600 passes short.
    """
    from captum.attr import NoiseTunnel, Saliency

    model = nets["resnet18"]
    X, y = inputs(n=1, size=32)
    noise, samples = 0.15, 200
    r = attribute(model, X, y, "smoothgrad", ("score",), samples=samples, noise=noise, max_batch=100)
    sigma = float(noise * (X.max() - X.min()))
    tunnel = NoiseTunnel(Saliency(model))
    options = dict(nt_samples=samples, nt_samples_batch_size=100, stdevs=sigma, target=y, abs=False)
    torch.manual_seed(5)
    ref = tunnel.attribute(X.clone(), nt_type="smoothgrad", **options)
    var = tunnel.attribute(X.clone(), nt_type="vargrad", **options)
    assert bool((var > 0).all())
    z = (r.attributions["score"] - ref) / torch.sqrt(2 * var / samples)
    mean_z2 = float((z**2).mean())
    assert 0.8 < mean_z2 < 1.25, mean_z2
    assert float((z.abs() > 4).float().mean()) < 0.005
    agreement = spearman(r.maps["score"], ref.abs().amax(dim=1))
    assert agreement > 0.9, agreement
