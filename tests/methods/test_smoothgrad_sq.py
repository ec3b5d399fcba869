"""SmoothGrad² (Hooker et al. 2019): the same noisy copies as SmoothGrad, the mean square, and Captum's
NoiseTunnel(nt_type="smoothgrad_sq") driven with those copies.

Captum draws its noise from torch's global generator, so it is driven with ours: its noise draw
(``NoiseTunnel._add_noise_to_input``) is replaced by one that returns our noisy copies in its order (each
image's copies together). With the same inputs the two are the same computation, to float32 rounding; a
float64 computation from the copies checks the definition itself. A statistical check against NoiseTunnel's
own draws is in test_vargrad.py, for both methods.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from saliency_core import attribute
from saliency_core.core.gradients import compute_saliency
from saliency_core.methods.smoothgrad import noisy_copies
from tests.methods.oracles import inputs, oracle
from tests.methods.small_nets import batch, relu_net


def copies_image_major(X: torch.Tensor, samples: int, noise: float, seed: int) -> torch.Tensor:
    """(N * S, 3, H, W): image n's copies at rows n*S .. n*S + S − 1, as NoiseTunnel lays them out."""
    stacked = torch.stack([noisy_copies(X, s, noise=noise, seed=seed) for s in range(samples)], dim=1)
    return stacked.reshape(-1, *X.shape[1:])


def noise_tunnel_on_our_copies(model, X, y, nt_type: str, samples: int, noise: float, seed: int, monkeypatch):
    """Captum's NoiseTunnel(Saliency(abs=False)) with its noise draw replaced by our copies (one partition)."""
    from captum.attr import NoiseTunnel, Saliency

    copies = copies_image_major(X, samples, noise, seed)

    def our_draw(input, stdev, nt_samples_partition):
        assert nt_samples_partition == samples and input.shape == X.shape
        return copies.clone()

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(our_draw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NoiseTunnel(Saliency(model)).attribute(X.clone(), nt_type=nt_type, nt_samples=samples, stdevs=1.0,
                                                        target=y, abs=False)


def gradients_at_copies(model, X, targets, samples, noise, seed, objective) -> torch.Tensor:
    """(N, S, 3, H, W) float64 input gradients at each noisy copy (the clean image's targets)."""
    rows = [compute_saliency(model, noisy_copies(X.double(), s, noise=noise, seed=seed), targets,
                             (objective,)).gradients[objective] for s in range(samples)]
    return torch.stack(rows, dim=1)


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1"])
def test_smoothgrad_sq_equals_noise_tunnel_on_the_same_copies(nets, name, monkeypatch):
    model = nets[name]
    X, y = inputs(size=32)
    samples, noise, seed = 6, 0.2, 3
    r = attribute(model, X, y, "smoothgrad_sq", samples=samples, noise=noise, seed=seed)
    for obj in ("score", "loss"):  # squares: the sign of the loss does not matter, log_softmax is −L
        ref = noise_tunnel_on_our_copies(oracle(model, obj), X, y, "smoothgrad_sq", samples, noise, seed,
                                         monkeypatch)
        torch.testing.assert_close(r.attributions[obj], ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_smoothgrad_sq_is_the_mean_square_of_the_gradients_at_smoothgrads_copies():
    model = relu_net().double()
    X, y = batch(n=3)
    samples, noise, seed = 5, 0.25, 11
    r = attribute(model, X.double(), y, "smoothgrad_sq", samples=samples, noise=noise, seed=seed)
    for obj in ("score", "loss"):
        g = gradients_at_copies(model, X, r.targets, samples, noise, seed, obj)
        torch.testing.assert_close(r.attributions[obj], g.square().mean(dim=1), rtol=1e-10, atol=1e-14)
        assert bool((r.attributions[obj] >= 0).all())
    # SmoothGrad's own mean from the same copies: E[g²] >= E[g]², with equality only without noise.
    mean = attribute(model, X.double(), y, "smoothgrad", samples=samples, noise=noise, seed=seed)
    assert bool((r.attributions["score"] >= mean.attributions["score"].square() - 1e-12).all())


def test_without_noise_smoothgrad_sq_is_the_squared_gradient():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "smoothgrad_sq", samples=3, noise=0.0)
    ref = compute_saliency(model, X, y)
    for obj in ("score", "loss"):
        torch.testing.assert_close(r.attributions[obj], ref.gradients[obj].square(), rtol=1e-5, atol=1e-12)


def test_smoothgrad_sq_is_reproducible_chunked_and_batch_invariant():
    model = relu_net()
    X, y = batch(n=3)
    a = attribute(model, X, y, "smoothgrad_sq", samples=4, seed=2)
    torch.manual_seed(123)
    b = attribute(model, X, y, "smoothgrad_sq", samples=4, seed=2, max_batch=3)
    alone = attribute(model, X[1:2], y[1:2], "smoothgrad_sq", samples=4, seed=2)
    for obj in ("score", "loss"):
        torch.testing.assert_close(b.attributions[obj], a.attributions[obj], rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(alone.attributions[obj], a.attributions[obj][1:2], rtol=1e-5, atol=1e-12)
    assert a.params == {"samples": 4, "noise": 0.15, "seed": 2}
