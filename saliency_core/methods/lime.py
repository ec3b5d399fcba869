"""LIME on superpixels: a weighted ridge regression of the objective on random subsets of superpixels.

Ribeiro, Singh & Guestrin, "“Why Should I Trust You?”: Explaining the
Predictions of Any Classifier", KDD 2016: a linear model of the classifier
near the image, fitted on perturbed copies weighted by their proximity. As
the authors' image explainer (``lime_image``, its defaults): superpixels from
quick shift (kernel_size 4, max_dist 200, ratio 0.2); samples that keep each
superpixel with probability ½ (the first one the image itself) and show the
baseline x′ in the others (:mod:`saliency_core.methods._surrogate`); weights
√exp(−d² / w²) with d the cosine distance between the sample and the all-ones
vector, d = 1 − √(m / M) for m of M superpixels kept (1 for none), and w the
``kernel_width`` (0.25); then ridge regression with an intercept and
penalty 1 on every superpixel (``lime_image`` keeps every superpixel by
default too; the paper's K-LASSO selection of K features is not done).
f = s_y (score) or −L = log p_y (loss), so positive coefficients are evidence
*for* the target for both.

Captum's ``Lime`` (the oracle in ``tests/methods/test_lime.py``) defaults to
other choices (a Lasso, a kernel on the distance between the images
themselves); the test gives it this kernel, a ridge fit and the same
samples, and compares like with like.
"""

from __future__ import annotations

from functools import partial

import torch

from saliency_core.methods import _surrogate
from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.declaration import AttributionMethod, Param

#: The ridge penalty of lime_image's default regressor (scikit-learn's Ridge(alpha=1)).
RIDGE_ALPHA = 1.0


def draw(samples: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """(samples, features) bool: the image (all True), then each superpixel kept with probability ½."""
    z = torch.rand(samples, features, generator=generator) < 0.5
    z[0] = True
    return z


def weigh(z: torch.Tensor, kernel_width: float = 0.25) -> torch.Tensor:
    """(K,) float64 √exp(−d² / w²), d = 1 − √(m / M) the cosine distance of each sample to all ones (1 for m = 0)."""
    kept = z.sum(dim=1).double() / z.shape[1]
    d = 1.0 - kept.sqrt()
    return torch.exp(-(d**2) / kernel_width**2).sqrt()


def run(req: Request, samples: int = 200, superpixels: str = "quickshift", segments: int = 50,
        compactness: float = 10.0, kernel_size: float = 4.0, max_dist: float = 200.0, seed: int = 0,
        baseline: str | torch.Tensor = "dataset_mean", kernel_width: float = 0.25) -> MethodOutput:
    """attributions[obj] = the ridge coefficient of the superpixel holding the pixel, f = s_y or −L; (N, 3, H, W)."""
    return _surrogate.explain(req, draw, partial(weigh, kernel_width=kernel_width), RIDGE_ALPHA, samples=samples,
                              superpixels=superpixels, segments=segments, compactness=compactness,
                              kernel_size=kernel_size, max_dist=max_dist, seed=seed, baseline=baseline)


METHOD = AttributionMethod(
    name="lime", title="LIME", citation="Ribeiro, Singh & Guestrin 2016",
    summary="ridge coefficients of f ≈ b + Σ_j β_j z_j over random subsets z of the superpixels, weighted by "
            "√exp(−d²/w²), d their cosine distance to the image; f on x′ + z ⊙ (x − x′)",
    params=(*_surrogate.params(200, "quickshift", "perturbed samples, one forward pass each, the image first "
                               "(the authors' lime_image: 1000)"),
            Param("kernel_width", 0.25, float, "w of the proximity kernel √exp(−d²/w²) (lime_image: 0.25)",
                  minimum=0.01, maximum=10.0)),
    loss_objective="-L", output="input", run=run, passes=_surrogate.passes, default_view=False,
    needs=frozenset({"baseline"}), family="perturbation",
)
