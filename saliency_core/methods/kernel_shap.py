"""KernelSHAP on superpixels: Shapley values of the superpixels from a weighted linear regression on coalitions.

Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions",
NeurIPS 2017, theorem 2: the linear model f(z) ≈ φ_0 + Σ_j φ_j z_j fitted by
weighted least squares with the Shapley kernel
π(z) = (M − 1) / (C(M, |z|) · |z| · (M − |z|)) over coalitions z of the M
superpixels has the Shapley values as its coefficients. A coalition keeps its
superpixels and shows the baseline x′ in the others
(:mod:`saliency_core.methods._surrogate`); f = s_y (score) or −L = log p_y
(loss), so positive is evidence *for* the target for both.

Sampled as Captum's ``KernelShap`` (the oracle in
``tests/methods/test_kernel_shap.py``, given the same superpixels and the same
samples): the first two samples are the image (z = 1) and the baseline
(z = 0), weighted 10⁶ in place of the kernel's infinite weight (so
φ_0 ≈ f(x′) and Σ φ ≈ f(x) − f(x′)); every other sample draws its size m with
probability ∝ (M − 1) / (m (M − m)), m = 1 … M − 1, then m superpixels
uniformly, and weighs 1: drawn that way, the Shapley kernel is in the sampling.
The fit is least squares with an intercept and no penalty (scikit-learn's
``LinearRegression``, as Captum; the minimum-norm solution when the samples
do not determine it). The authors' ``shap`` library samples 2M + 2048
coalitions by default (and enumerates the small ones); here ``samples``.
"""

from __future__ import annotations

import torch

from saliency_core.methods import _surrogate
from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.declaration import AttributionMethod

#: Captum's stand-in for the Shapley kernel's infinite weight of the empty and the full coalition.
ENDPOINT_WEIGHT = 1e6


def draw(samples: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """(samples, features) bool coalitions: all, none, then sizes m ∝ (M − 1) / (m (M − m)), members uniform."""
    z = torch.zeros(samples, features, dtype=torch.bool)
    z[0] = True
    if samples > 2 and features > 1:
        m = torch.arange(1, features, dtype=torch.float64)
        sizes = torch.multinomial((features - 1) / (m * (features - m)), samples - 2, replacement=True,
                                  generator=generator) + 1
        ranks = torch.rand(samples - 2, features, generator=generator).argsort(dim=1).argsort(dim=1)
        z[2:] = ranks < sizes[:, None]
    elif samples > 2:
        z[2:] = True  # one superpixel: the image and the baseline are the only coalitions
    return z


def weigh(z: torch.Tensor) -> torch.Tensor:
    """(K,) float64: ENDPOINT_WEIGHT for the full and the empty coalition, 1 for every other."""
    size = z.sum(dim=1)
    ends = (size == 0) | (size == z.shape[1])
    return torch.where(ends, ENDPOINT_WEIGHT, 1.0).double()


def run(req: Request, samples: int = 200, superpixels: str = "slic", segments: int = 50, compactness: float = 10.0,
        kernel_size: float = 4.0, max_dist: float = 200.0, seed: int = 0,
        baseline: str | torch.Tensor = "dataset_mean") -> MethodOutput:
    """attributions[obj] = φ_j of the superpixel holding the pixel, f = s_y or −L; (N, 3, H, W)."""
    return _surrogate.explain(req, draw, weigh, 0.0, samples=samples, superpixels=superpixels, segments=segments,
                              compactness=compactness, kernel_size=kernel_size, max_dist=max_dist, seed=seed,
                              baseline=baseline)


METHOD = AttributionMethod(
    name="kernel_shap", title="KernelSHAP", citation="Lundberg & Lee 2017",
    summary="Shapley values φ of the superpixels: least squares f ≈ φ_0 + Σ_j φ_j z_j over coalitions z drawn "
            "with the Shapley kernel; f on x′ + z ⊙ (x − x′)",
    params=_surrogate.params(200, "slic", "coalitions sampled, one forward pass each, the image and the baseline "
                             "first (the authors' shap library: 2M + 2048 for M superpixels, 2148 for 50)"),
    loss_objective="-L", output="input", run=run, passes=_surrogate.passes, default_view=False,
    needs=frozenset({"baseline"}), family="perturbation",
)
