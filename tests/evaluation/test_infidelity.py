"""Infidelity against Captum (random perturbations, our draws) and Quantus 0.6.0 (its deterministic patch
sweep agrees only for one patch covering the image), and a linear model's known answer."""

import numpy as np
import pytest
import quantus
import torch
from captum.metrics import infidelity as captum_infidelity
from conftest import quantus_arrays
from small_nets import Linear

from saliency_core.evaluation.metrics._common import image_seeds
from saliency_core.evaluation.metrics.infidelity import infidelity, noise_draw


@pytest.mark.parametrize("scaling", ["optimal", "none"])
def test_noise_infidelity_equals_captum_given_the_same_noise(data, net, scaling):
    X, y, maps = data
    n, c, h, w = X.shape
    samples, std = 6, 0.3
    X64, net64 = X.double(), _double(net)
    seeds = image_seeds(X64, 1).tolist()

    def perturb(inputs):
        # Captum repeats each image `samples` times, image by image: row i * samples + k is image i's draw k.
        noise = torch.stack([noise_draw(seeds[row // samples], row % samples, (c, h, w), torch.float64) * std
                             for row in range(n * samples)])
        return noise, inputs - noise

    theirs = captum_infidelity(net64, perturb, X64, maps[:, None].expand(-1, 3, -1, -1), target=y,
                               n_perturb_samples=samples, normalize=scaling == "optimal")
    ours = infidelity(net64, X64, y, maps, samples=samples, noise_std=std, seed=1, scaling=scaling)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5)


def test_one_whole_image_square_equals_quantus(data, net):
    X, y, maps = data
    x, yy, a = quantus_arrays(X, y, maps)
    theirs = quantus.Infidelity(perturb_patch_sizes=[16], n_perturb_samples=1, perturb_baseline=0.0,
                                normalise=False, abs=False, return_aggregate=False, disable_warnings=True)(
        model=net, x_batch=x, y_batch=yy, a_batch=a, device="cpu", softmax=False, batch_size=4)
    ours = infidelity(net, X, y, maps, perturbation="square", patch=16, samples=1, scaling="none")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def _double(net):
    import copy

    return copy.deepcopy(net).double().eval()


def test_a_linear_models_weights_have_no_infidelity():
    torch.manual_seed(1)
    model = Linear((3, 6, 6), 4).double().eval()
    v = torch.randn(4, 36, dtype=torch.float64)
    with torch.no_grad():
        model.fc.weight.copy_(v.repeat(1, 3))  # the same weight on each channel: a per-pixel map says it all
    X = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 2])
    maps = v[y].view(2, 6, 6)
    for perturbation in ("noise", "square"):
        got = infidelity(model, X, y, maps, perturbation=perturbation, patch=3, samples=8, scaling="none")
        np.testing.assert_allclose(got, 0.0, atol=1e-20)
    # Twice the weights: wrong as given, right once scaled.
    assert np.all(infidelity(model, X, y, 2 * maps, samples=8, scaling="none") > 1e-3)
    np.testing.assert_allclose(infidelity(model, X, y, 2 * maps, samples=8), 0.0, atol=1e-20)
