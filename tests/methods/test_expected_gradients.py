"""Expected Gradients / GradientSHAP: Captum's GradientShap given the same draws, reproducibility, the
completeness gap, refusals and the declared cost.

Captum draws the references' indices with ``np.random.choice``, α with ``np.random.uniform`` and the input noise
with ``torch.normal``; :func:`captum_with_our_draws` hands it ours there instead (and fails unless each was asked
for exactly as often as expected), so the two compute the same estimator from the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saliency_core import attribute
from saliency_core.core.baselines import gaussian_blur, resolve_blur_sigma
from saliency_core.errors import InvalidInputError
from saliency_core.methods.declaration import Passes
from saliency_core.methods.expected_gradients import BLUR_FACTORS, draw, noise_references
from saliency_core.methods.integrated_gradients import gap_scale
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from tests.methods.oracles import oracle
from tests.methods.small_nets import WithPreprocessing, batch, smooth_net

EG = ATTRIBUTION_METHODS["expected_gradients"]
OBJECTIVES = ("score", "loss")


def blur_set(x: torch.Tensor) -> torch.Tensor:
    """(K, 3, H, W): the "blur" references of one image (1, 3, H, W), built here from the blur itself."""
    sigma = resolve_blur_sigma(x.shape)
    return torch.cat([gaussian_blur(x, f * sigma) for f in BLUR_FACTORS])


def our_draws(seed: int, samples: int, references: int, shape: tuple[int, ...], noisy: bool):
    drawn = [draw(seed, s, references, shape if noisy else None) for s in range(samples)]
    index = np.array([d[0] for d in drawn])
    alpha = np.array([d[1] for d in drawn])
    z = torch.stack([d[2] for d in drawn]) if noisy else torch.zeros(samples, *shape)
    return index, alpha, z


def captum_with_our_draws(monkeypatch, forward, X, y, refs, *, samples, seed=0, stdevs=0.0):
    """Captum's GradientShap of ``forward`` on X (N, 3, H, W) from the references ``refs`` (K, 3, H, W), with the
    draws of our ``seed``, shared by the images as ours are. Returns (attributions, (N,) mean convergence delta)."""
    from captum.attr import GradientShap

    n, shape = X.shape[0], tuple(X.shape[1:])
    index, alpha, z = our_draws(seed, samples, refs.shape[0], shape, stdevs > 0)
    calls = {"choice": 0, "uniform": 0, "normal": 0}

    def choice(k, size):
        calls["choice"] += 1
        assert (k, size) == (refs.shape[0], n * samples)
        return np.tile(index, n)  # rows are image-major: row r is draw r % samples of image r // samples

    def uniform(low, high, size):
        calls["uniform"] += 1
        assert (low, high, size) == (0.0, 1.0, n * samples)
        return np.tile(alpha, n)

    def normal(mean, std):
        calls["normal"] += 1
        assert mean == 0 and tuple(std.shape) == (n * samples, *shape)
        return std * z.repeat(n, 1, 1, 1)

    with monkeypatch.context() as m:
        m.setattr(np.random, "choice", choice)
        m.setattr(np.random, "uniform", uniform)
        m.setattr(torch, "normal", normal)
        attr, delta = GradientShap(forward).attribute(X.clone(), baselines=refs, n_samples=samples,
                                                      stdevs=float(stdevs), target=y, return_convergence_delta=True)
    assert calls == {"choice": 1, "uniform": 1, "normal": 1}, calls
    return attr, delta.view(n, samples).mean(dim=1)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


def assert_captums(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert relative(ours, theirs) < 1e-5, relative(ours, theirs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


def assert_gap_is_captums_delta(r, obj, model, X, refs_per_image, y, delta, samples, seed=0, stdevs=0.0):
    """Our gap times its scale is Captum's mean delta: Σ EG − mean over the draws of f(x + ε) − f(x′)."""
    f = oracle(model, obj)
    shape = tuple(X.shape[1:])
    index, _, z = our_draws(seed, samples, refs_per_image[0].shape[0], shape, stdevs > 0)
    with torch.no_grad():
        ends = torch.stack([f(X[i] + stdevs * z)[:, y[i]].double().mean() for i in range(len(X))])
        starts = torch.stack([f(refs_per_image[i][index])[:, y[i]].double().mean() for i in range(len(X))])
    torch.testing.assert_close(r.convergence[obj].double() * gap_scale(ends, starts), delta.double(),
                               rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- Captum, the same draws


@pytest.mark.parametrize("stdevs", [0.0, 0.2])
def test_blur_references_equal_captum_gradient_shap_for_score_and_loss(monkeypatch, stdevs):
    """Each image has its own references (its blurs): Captum runs one image at a time with its set."""
    model = smooth_net()
    X, _ = batch(n=2, size=16)
    y = torch.tensor([1, 4])
    samples = 12
    r = attribute(model, X, y, "expected_gradients", OBJECTIVES, samples=samples, stdevs=stdevs, seed=3,
                  max_batch=5)
    refs = [blur_set(X[i:i + 1]) for i in range(2)]
    for obj in OBJECTIVES:
        parts = [captum_with_our_draws(monkeypatch, oracle(model, obj), X[i:i + 1], y[i:i + 1], refs[i],
                                       samples=samples, seed=3, stdevs=stdevs) for i in range(2)]
        theirs = torch.cat([p[0] for p in parts])
        assert_captums(r.attributions[obj], theirs)
        delta = torch.cat([p[1] for p in parts])
        assert_gap_is_captums_delta(r, obj, model, X, refs, y, delta, samples, seed=3, stdevs=stdevs)


def test_a_tensor_of_references_is_shared_by_the_batch_as_in_captum(monkeypatch):
    model = smooth_net(seed=2)
    X, _ = batch(n=3, size=16, seed=5)
    y = torch.tensor([0, 6, 2])
    refs = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    r = attribute(model, X, y, "expected_gradients", OBJECTIVES, samples=10, baselines=refs, stdevs=0.1)
    assert r.params == {"samples": 10, "baselines": "tensor", "stdevs": 0.1, "seed": 0, "references": 5}
    for obj in OBJECTIVES:
        theirs, delta = captum_with_our_draws(monkeypatch, oracle(model, obj), X, y, refs, samples=10, stdevs=0.1)
        assert_captums(r.attributions[obj], theirs)
        assert_gap_is_captums_delta(r, obj, model, X, [refs] * 3, y, delta, 10, stdevs=0.1)


@pytest.mark.slow
def test_noise_references_on_the_embedded_model_equal_captum(monkeypatch, lite0):
    from saliency_core.inputs.samples import sample_by_name

    coffee = sample_by_name("coffee")
    x = lite0.preprocess([coffee.image]).x
    y = torch.tensor([coffee.label])
    samples = 4
    r = attribute(lite0, x, y, "expected_gradients", OBJECTIVES, samples=samples, baselines="noise", seed=5)
    prep = lite0.preprocessing
    refs = noise_references(5, tuple(x.shape[1:]), prep.mean, prep.std)
    m, sd = torch.tensor(prep.mean).view(3, 1, 1), torch.tensor(prep.std).view(3, 1, 1)
    pixels = refs * sd + m  # back to the pixel range, where the noise is uniform on [0, 1]
    assert float(pixels.min()) > -1e-6 and float(pixels.max()) < 1 + 1e-6 and 0.49 < float(pixels.mean()) < 0.51
    for obj in OBJECTIVES:
        theirs, delta = captum_with_our_draws(monkeypatch, oracle(lite0.model, obj), x, y, refs, samples=samples,
                                              seed=5)
        print(f"embedded model, {obj}: max relative difference {relative(r.attributions[obj], theirs):.2e}")
        assert_captums(r.attributions[obj], theirs)
        assert_gap_is_captums_delta(r, obj, lite0.model, x, [refs], y, delta, samples, seed=5)


# ---------------------------------------------------------------- closed form, reproducibility, the gap


def test_a_linear_score_is_the_mean_difference_times_the_weights_with_no_gap():
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).eval()
    X, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 3])
    refs = torch.randn(6, 3, 8, 8)
    r = attribute(model, X, y, "expected_gradients", ("score",), samples=9, baselines=refs, seed=1)
    index = torch.tensor([draw(1, s, 6)[0] for s in range(9)])
    w = model[1].weight.detach().view(5, 3, 8, 8)[y]
    torch.testing.assert_close(r.attributions["score"], (X - refs[index].mean(dim=0)) * w, rtol=1e-5, atol=1e-6)
    assert float(r.convergence["score"].abs().max()) < 1e-5


def test_the_same_seed_gives_the_same_map_another_seed_another_and_the_batch_does_not_matter():
    model = smooth_net()
    X, y = batch(n=3, size=16)
    state = torch.get_rng_state()
    a = attribute(model, X, y, "expected_gradients", samples=6, stdevs=0.1)
    assert torch.equal(torch.get_rng_state(), state)  # never torch's global generator
    torch.manual_seed(123)
    np.random.seed(9)
    b = attribute(model, X, y, "expected_gradients", samples=6, stdevs=0.1)
    other = attribute(model, X, y, "expected_gradients", samples=6, stdevs=0.1, seed=1)
    chunked = attribute(model, X, y, "expected_gradients", samples=6, stdevs=0.1, max_batch=4)
    alone = attribute(model, X[1:2], y[1:2], "expected_gradients", samples=6, stdevs=0.1)
    for obj in OBJECTIVES:
        assert torch.equal(a.attributions[obj], b.attributions[obj])
        assert not torch.allclose(a.attributions[obj], other.attributions[obj], rtol=1e-2, atol=1e-4)
        torch.testing.assert_close(chunked.attributions[obj], a.attributions[obj], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(alone.attributions[obj], a.attributions[obj][1:2], rtol=1e-5, atol=1e-7)
    # More samples keep the draws of fewer: draw s is a function of (seed, s) alone.
    assert [draw(0, s, 4) for s in range(3)] == [draw(0, s, 4) for s in range(3)]
    assert draw(0, 1, 4, (2,))[:2] == draw(0, 1, 4)[:2]  # asking for the noise leaves index and α alone


def test_the_completeness_gap_shrinks_with_more_samples():
    """The gap is the error of sampling α (the draws' own change is subtracted): about 1/√samples."""
    model = smooth_net()
    X, y = batch(n=3, size=16)
    X = 3 * X  # a long path: a curved integrand, so few samples are visibly off

    def mean_gap(samples: int) -> float:
        gaps = [attribute(model, X, y, "expected_gradients", samples=samples, baselines="blur", seed=seed)
                .convergence for seed in range(3)]
        return float(torch.stack([g[o].abs() for g in gaps for o in OBJECTIVES]).mean())

    few, many = mean_gap(2), mean_gap(128)
    assert few > 0.05 and many < few / 3, (few, many)


def test_noise_and_mixed_references_need_the_models_normalisation():
    model = smooth_net()
    X, y = batch(n=2, size=16)
    for name in ("noise", "mixed"):
        with pytest.raises(InvalidInputError, match=f'baselines "{name}" needs the model\'s normalisation'):
            attribute(model, X, y, "expected_gradients", samples=2, baselines=name)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    loaded = WithPreprocessing(model, mean, std)
    r = attribute(loaded, X, y, "expected_gradients", samples=3, baselines="mixed")
    assert r.params["references"] == 4 and bool(torch.isfinite(r.attributions["loss"]).all())
    r = attribute(loaded, X, y, "expected_gradients", samples=3, baselines="noise")
    assert r.params["references"] == 16


@pytest.mark.parametrize(
    "params, match",
    [
        ({"samples": 0}, "samples must be an integer >= 1"),
        ({"samples": 2.5}, "samples"),
        ({"samples": True}, "samples"),
        ({"stdevs": -0.1}, "stdevs must be a finite number >= 0"),
        ({"stdevs": float("nan")}, "stdevs"),
        ({"seed": -1}, "seed"),
        ({"baselines": "grey"}, "baselines must be one of"),
        ({"baselines": torch.zeros(3, 16, 16)}, r"baselines as a tensor must be a float tensor \(K, \*\(3, 16, 16\)"),
        ({"baselines": torch.zeros(2, 3, 8, 8)}, "baselines as a tensor"),
        ({"baselines": torch.zeros(0, 3, 16, 16)}, "baselines as a tensor"),
        ({"baselines": torch.zeros(2, 3, 16, 16, dtype=torch.int64)}, "baselines as a tensor"),
        ({"steps": 4}, "unknown steps"),
    ],
)
def test_bad_parameters_raise_invalid_input_naming_them(params, match):
    X, y = batch(n=2, size=16)
    with pytest.raises(InvalidInputError, match=match):
        attribute(smooth_net(), X, y, "expected_gradients", **params)


# ---------------------------------------------------------------- the declaration and the rows it runs


class Counting(torch.nn.Module):
    """smooth_net, recording every batch it runs: (rows, with gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = smooth_net()
        self.rows: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append((int(x.shape[0]), torch.is_grad_enabled()))
        return self.inner(x)


def test_the_declaration():
    assert EG.defaults() == {"samples": 32, "baselines": "blur", "stdevs": 0.0, "seed": 0}
    assert (EG.family, EG.loss_objective, EG.default_view, EG.needs) == ("path", "-L", False, {"baseline"})
    assert EG.cost() == Passes(gradient=32, forward=5)  # the image, its 4 blurs
    assert EG.trial_params()["samples"] == 1


@pytest.mark.parametrize("params", [{"samples": 5}, {"samples": 3, "stdevs": 0.2},
                                    {"samples": 4, "baselines": torch.zeros(7, 3, 16, 16)}])
def test_the_declared_cost_is_the_rows_it_runs_and_progress_counts_them(params):
    model = Counting().eval()
    X, y = batch(n=2, size=16)
    calls: list[tuple[int, int]] = []
    attribute(model, X, y, "expected_gradients", OBJECTIVES, max_batch=3, progress=lambda d, t: calls.append((d, t)),
              **params)
    cost = EG.cost(params)
    assert sum(n for n, g in model.rows if g) == 2 * cost.gradient
    assert sum(n for n, g in model.rows if not g) == 2 * cost.forward
    assert max(n for n, _ in model.rows) <= 3  # max_batch rows a pass
    total = 2 * (cost.rows - 1)  # every row but the clean pass's
    done = [d for d, _ in calls]
    assert {t for _, t in calls} == {total} and done == sorted(done) and done[-1] == total
