"""LIME on superpixels (Ribeiro, Singh & Guestrin 2016), as the authors' ``lime_image`` defines it, equals Captum's
``Lime`` given the same superpixels, the same samples, lime_image's proximity kernel and a ridge fit (Captum's own
defaults are a Lasso and a kernel on the images' distance: another definition), for the score and the loss (−L),
on a small CNN and on the embedded model; it runs on the team's own compiled models."""

from __future__ import annotations

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import Lime

from saliency_core import attribute
from saliency_core.methods import lime
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
from tests.methods.test_kernel_shap import captum_with_these_samples, labels_of


def lime_image_weights(z: np.ndarray, kernel_width: float) -> np.ndarray:
    """lime_image's sample weights, as its code computes them: scikit-learn's cosine distance of each sample to its
    first one, the image (all ones), then lime_base's kernel √exp(−d² / w²)."""
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(z, np.ones((1, z.shape[1])), metric="cosine").ravel()
    return np.sqrt(np.exp(-(d**2) / kernel_width**2))


def check_against_captum(model, x, y, samples, seed, kernel_width=0.25, **superpixels):
    r = attribute(model, x, y, "lime", OBJECTIVES, samples=samples, seed=seed, kernel_width=kernel_width,
                  **superpixels)
    module = getattr(model, "model", model)
    for n, labels in enumerate(labels_of(model, x, **superpixels)):
        z = lime.draw(samples, int(labels.max()) + 1, seeded_generator(seed))

        def proximity(_original, _perturbed, sample, **_kwargs):
            return torch.from_numpy(lime_image_weights(sample.numpy().astype(np.float64), kernel_width)).float()

        for obj in OBJECTIVES:
            oracle = captum_with_these_samples(
                Lime(oracle_function(module, obj), interpretable_model=SkLearnRidge(alpha=1.0),
                     similarity_func=proximity), z)
            want = oracle.attribute(x[n:n + 1], target=int(y[n]), feature_mask=labels[None, None], n_samples=samples,
                                    baselines=0.0, perturbations_per_eval=16)
            assert_matches(r.attributions[obj][n:n + 1], want)
    return r


def test_equals_captum_on_a_small_cnn():
    check_against_captum(small_cnn(), smooth_images(2, 40), [1, 3], samples=50, seed=5, superpixels="slic",
                         segments=12)


def test_equals_captum_on_the_embedded_model_with_quickshift(lite0):
    x = small_coffee(lite0, 64)
    kw = {"superpixels": "quickshift", "kernel_size": 2.0, "max_dist": 20.0}
    check_against_captum(lite0, x, [967], samples=40, seed=0, kernel_width=0.5, **kw)
    assert int(labels_of(lite0, x, **kw)[0].max()) > 3


def test_the_samples_and_weights_are_lime_images():
    z = lime.draw(5000, 12, seeded_generator(1))
    assert z[0].all() and abs(float(z[1:].double().mean()) - 0.5) < 0.01
    z[1] = False  # lime_image's cosine distance to an empty sample is 1
    for width in (0.25, 1.0):
        np.testing.assert_allclose(lime.weigh(z, width).numpy(), lime_image_weights(z.numpy().astype(float), width),
                                   rtol=1e-12, atol=1e-15)


def test_runs_on_torchscript_and_export_models(own_models):  # noqa: F811 -- the fixture
    check_on_own_models(own_models, "lime", {"samples": 24, "superpixels": "slic", "segments": 8})


def test_its_cost_is_the_rows_it_runs():
    assert ATTRIBUTION_METHODS["lime"].cost({"samples": 1000}).forward == 1000  # the image is sample one
    check_progress("lime", {"samples": 11, "superpixels": "slic", "segments": 8})
