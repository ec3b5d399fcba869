"""KernelSHAP on superpixels (Lundberg & Lee 2017) equals Captum's ``KernelShap`` given the same superpixels and the
same coalitions, for the score and the loss (−L), on a small CNN and on the embedded model; its Shapley values add
up to f(x) − f(x′); the superpixels are cut from the picture itself; it runs on the team's own compiled models."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from captum.attr import KernelShap

from saliency_core import attribute
from saliency_core.core.gradients import objective_per_image
from saliency_core.methods import _surrogate, kernel_shap
from saliency_core.methods._common import seeded_generator
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from tests.methods.perturbation_cases import (
    OBJECTIVES,
    assert_matches,
    check_on_own_models,
    check_progress,
    oracle_function,
    own_models,  # noqa: F401 -- fixture
    small_cnn,
    small_coffee,
    smooth_images,
)


def labels_of(model, x: torch.Tensor, **superpixels) -> list[torch.Tensor]:
    """Each image's superpixels as the method cuts them (its own function, on the images it sees)."""
    return [torch.from_numpy(_surrogate.segment(image, **superpixels))
            for image in _surrogate.display_images(SimpleNamespace(X=x, model=model))]


def captum_with_these_samples(explainer, samples: torch.Tensor):
    """``explainer`` (a Captum Lime or KernelShap) drawing ``samples`` (K, M) in order instead of its own."""

    def given(_inputs, **_kwargs):
        for row in samples:
            yield row[None].long()

    explainer.perturb_func = given
    return explainer


def float64_fit(model, dataloader, construct_kwargs, **kwargs):
    """Captum's scikit-learn training on the same data in float64. Captum hands scikit-learn float32, where the
    full and the empty coalition's weight of 10⁶ costs digits: at the dashboard's defaults (200 samples, 38
    superpixels of the coffee photo) its coefficients differ from the float64 fit by 1e-3 of the largest, by 2e-7
    in float64 (the method fits in float64)."""
    from captum._utils.models.linear_model.train import sklearn_train_linear_model
    from torch.utils.data import DataLoader, TensorDataset

    columns = [torch.cat(parts).double() for parts in zip(*dataloader, strict=True)]
    return sklearn_train_linear_model(model, DataLoader(TensorDataset(*columns), batch_size=len(columns[0])),
                                      construct_kwargs, **kwargs)


def check_against_captum(model, x, y, samples, seed, **superpixels):
    r = attribute(model, x, y, "kernel_shap", OBJECTIVES, samples=samples, seed=seed, **superpixels)
    module = getattr(model, "model", model)
    for n, labels in enumerate(labels_of(model, x, **superpixels)):
        z = kernel_shap.draw(samples, int(labels.max()) + 1, seeded_generator(seed))
        for obj in OBJECTIVES:
            oracle = captum_with_these_samples(KernelShap(oracle_function(module, obj)), z)
            oracle.interpretable_model.train_fn = float64_fit
            want = oracle.attribute(x[n:n + 1], target=int(y[n]), feature_mask=labels[None, None], n_samples=samples,
                                    baselines=0.0, perturbations_per_eval=16)
            assert_matches(r.attributions[obj][n:n + 1], want)
    return r


def test_equals_captum_on_a_small_cnn():
    x = smooth_images(2, 40)
    check_against_captum(small_cnn(), x, [1, 3], samples=60, seed=5, superpixels="slic", segments=12)
    assert min(int(labels.max()) + 1 for labels in labels_of(small_cnn(), x, superpixels="slic", segments=12)) > 3


def test_equals_captum_on_the_embedded_model(lite0):
    check_against_captum(lite0, small_coffee(lite0, 64), [967], samples=40, seed=0, superpixels="slic", segments=16)


def test_the_shapley_values_add_up_to_the_change_from_the_baseline(lite0):
    """Efficiency: Σ_j φ_j = f(x) − f(x′), held by the 10⁶ weights of the full and the empty coalition."""
    x = small_coffee(lite0, 64)
    r = attribute(lite0, x, [967], "kernel_shap", OBJECTIVES, samples=30, segments=16)
    (labels,) = labels_of(lite0, x, superpixels="slic", segments=16)
    first_pixel = [int(np.flatnonzero(labels.numpy().ravel() == j)[0]) for j in range(int(labels.max()) + 1)]
    with torch.no_grad():
        both = lite0.model(torch.cat([x, torch.zeros_like(x)]))
    for obj in OBJECTIVES:
        f = objective_per_image(both, torch.tensor([967, 967]), obj, loss_sign=-1).double()
        phi = r.attributions[obj][0, 0].reshape(-1)[first_pixel].double()
        assert abs(float(phi.sum()) - float(f[0] - f[1])) <= 1e-3 * abs(float(f[0] - f[1]))


def test_the_coalitions_follow_the_shapley_kernel():
    z = kernel_shap.draw(20_000, 10, seeded_generator(0))
    assert z[0].all() and not z[1].any()
    sizes = z[2:].sum(dim=1)
    m = np.arange(1, 10)
    expected = (9 / (m * (10 - m))) / (9 / (m * (10 - m))).sum()
    observed = np.bincount(sizes.numpy(), minlength=10)[1:] / len(sizes)
    np.testing.assert_allclose(observed, expected, atol=0.01)
    assert abs(float(z[2:].double().mean(dim=0).std())) < 0.01  # every superpixel as often
    torch.testing.assert_close(kernel_shap.weigh(z[:3]), torch.tensor([1e6, 1e6, 1.0], dtype=torch.float64))


def test_the_superpixels_are_cut_from_the_picture(lite0):
    """The segmentation sees the image as shown (the model's normalisation undone), not its normalised values."""
    from saliency_core.inputs.samples import sample_by_name

    batch = lite0.preprocess(sample_by_name("coffee").image)
    (seen,) = _surrogate.display_images(SimpleNamespace(X=batch.x, model=lite0))
    np.testing.assert_allclose(seen, batch.display[0] / 255.0, atol=1 / 255 + 1e-6)
    labels = _surrogate.segment(seen, "slic", segments=50)
    assert labels.min() == 0 and len(np.unique(labels)) == labels.max() + 1 > 20


def test_runs_on_torchscript_and_export_models(own_models):  # noqa: F811 -- the fixture
    check_on_own_models(own_models, "kernel_shap", {"samples": 24, "segments": 8})


def test_its_cost_is_the_rows_it_runs():
    assert ATTRIBUTION_METHODS["kernel_shap"].cost({"samples": 2148}).forward == 2148  # the image is sample one
    check_progress("kernel_shap", {"samples": 11, "segments": 8})


@pytest.mark.parametrize("superpixels", ["slic", "quickshift"])
def test_both_segmentations_run(superpixels):
    x = smooth_images(1, 32)
    kw = {"superpixels": superpixels, "segments": 10, "kernel_size": 2.0, "max_dist": 10.0}
    r = attribute(small_cnn(), x, [2], "kernel_shap", OBJECTIVES, samples=20, **kw)
    (labels,) = labels_of(small_cnn(), x, **kw)
    assert int(labels.max()) > 0 and float(r.maps["loss"].max()) > 0
    assert len(torch.unique(r.attributions["loss"])) == int(labels.max()) + 1  # one value per superpixel
