"""SmoothGrad (Smilkov et al. 2017): its limits, reproducibility, threads, and Captum's NoiseTunnel."""

from __future__ import annotations

import threading

import torch

from saliency_core import attribute
from saliency_core.core.gradients import compute_saliency
from saliency_core.methods.smoothgrad import noisy_copies
from tests.methods.oracles import inputs, spearman
from tests.methods.small_nets import batch, relu_net


def test_smoothgrad_without_noise_is_the_gradient():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "smoothgrad", samples=5, noise=0.0)
    ref = compute_saliency(model, X, y)
    for obj in ("score", "loss"):
        torch.testing.assert_close(r.attributions[obj], ref.gradients[obj], rtol=1e-5, atol=1e-7)


def test_smoothgrad_with_one_sample_is_the_gradient_at_one_reproducible_noisy_input():
    model = relu_net()
    X, y = batch()
    r = attribute(model, X, y, "smoothgrad", samples=1, noise=0.2, seed=7)
    targets = compute_saliency(model, X, y).targets  # top-1 of the clean image, not of the noisy one
    ref = compute_saliency(model, noisy_copies(X, 0, noise=0.2, seed=7), targets)
    for obj in ("score", "loss"):
        torch.testing.assert_close(r.attributions[obj], ref.gradients[obj], rtol=1e-6, atol=1e-8)
    assert torch.equal(r.targets, targets)
    assert not torch.allclose(noisy_copies(X, 0, noise=0.2, seed=7), X)


def test_smoothgrad_is_reproducible_batch_invariant_and_leaves_the_global_generator_alone():
    model = relu_net()
    X, y = batch(n=3)
    state = torch.get_rng_state()
    a = attribute(model, X, y, "smoothgrad", samples=4)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    b = attribute(model, X, y, "smoothgrad", samples=4)
    assert torch.equal(a.attributions["score"], b.attributions["score"])
    other_seed = attribute(model, X, y, "smoothgrad", samples=4, seed=1)
    assert not torch.allclose(a.attributions["score"], other_seed.attributions["score"])
    chunked = attribute(model, X, y, "smoothgrad", samples=4, max_batch=3)
    alone = attribute(model, X[2:], y[2:], "smoothgrad", samples=4)
    for obj in ("score", "loss"):
        torch.testing.assert_close(chunked.attributions[obj], a.attributions[obj], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(alone.attributions[obj], a.attributions[obj][2:], rtol=1e-5, atol=1e-7)


def test_smoothgrad_gives_the_same_map_in_every_thread():
    model = relu_net()
    X, y = batch(n=2, size=24)
    expected = attribute(model, X, y, "smoothgrad", samples=6)
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        torch.manual_seed(i)  # each thread moves the global generator; the noise must not follow
        barrier.wait()
        torch.randn(100)
        results[i] = attribute(model, X, y, "smoothgrad", samples=6)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        for obj in ("score", "loss"):
            assert torch.equal(r.attributions[obj], expected.attributions[obj])


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
