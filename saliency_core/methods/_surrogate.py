"""What LIME and KernelSHAP share: superpixels, coalitions of them run through the model, a weighted linear fit.

Both explain an image through M superpixels (scikit-image's SLIC or quick
shift, :func:`superpixel_labels`): a sample is a binary vector z ∈ {0, 1}^M, and
the image it stands for keeps the superpixels with z_j = 1 and shows the
baseline x′ in the others, x′ + z[segment] ⊙ (x − x′). Each sample is one
forward pass, which gives both objectives, f = s_y (score) and −L = log p_y
(loss), so that positive coefficients mean evidence *for* the target for
both. The methods differ only in how samples are drawn and weighted and in
the fit's ridge penalty (:func:`explain`); the coefficient of superpixel j
is every pixel's value in it, the same in the three channels of the
(N, 3, H, W) attribution (the map is |a| for "max" and "mean_abs", √3·|a| for "l2").

The first sample is always the image itself (z = 1): its forward pass is the
clean one that resolves the target, so ``samples`` samples cost ``samples``
forward passes per image. Samples come from a private CPU generator seeded
with ``seed``, the same for every image with as many superpixels, so an
image's map does not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from saliency_core.core import baselines, limits
from saliency_core.core.gradients import objective_per_image
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    clean_forward,
    forward_rows,
    make_baseline,
    resolve_targets,
    seeded_generator,
)
from saliency_core.methods.declaration import Param, Passes, baseline_param

SEGMENTATIONS = ("slic", "quickshift")
#: quick shift's balance of colour against position, fixed at LIME's (lime_image's) value.
QUICKSHIFT_RATIO = 0.2
#: The most superpixels SLIC may be asked for: each is a coefficient, and a fit wants many samples per coefficient.
MAX_SEGMENTS = 1000

Draw = Callable[[int, int, torch.Generator], torch.Tensor]
Weigh = Callable[[torch.Tensor], torch.Tensor]


def params(samples: int, superpixels: str, samples_help: str) -> tuple[Param, ...]:
    """The parameters LIME and KernelSHAP share, with the method's defaults for ``samples`` and ``superpixels``."""
    return (
        Param("samples", samples, int, samples_help, minimum=2, maximum=limits.MAX_FORWARD_PASSES, costly=True),
        Param("superpixels", superpixels, str, "how the image is cut into superpixels: scikit-image's SLIC "
              "(segments, compactness) or quick shift (kernel_size, max_dist; ratio 0.2, as LIME's code)",
              SEGMENTATIONS),
        Param("segments", 50, int, "SLIC: about how many superpixels (n_segments)", minimum=1,
              maximum=MAX_SEGMENTS),
        Param("compactness", 10.0, float, "SLIC: colour against space; higher gives squarer superpixels",
              minimum=0.01, maximum=1000.0),
        Param("kernel_size", 4.0, float, "quick shift: width of the Gaussian kernel, in pixels (LIME's code: 4)",
              minimum=0.5, maximum=100.0),
        Param("max_dist", 200.0, float, "quick shift: cut-off distance; higher gives fewer superpixels (LIME's "
              "code: 200)", minimum=1.0, maximum=10000.0),
        Param("seed", 0, int, "seed of the samples (a private generator: same seed, same map)", minimum=0,
              maximum=limits.MAX_SEED),
        baseline_param("dataset_mean"),
    )


def passes(samples: int = 200, **_params: object) -> Passes:
    """Per image: one forward pass per sample, the first the clean image (which also resolves the target)."""
    return Passes(gradient=0, forward=samples)


# --------------------------------------------------------------------------- superpixels

def display_images(req: Request) -> np.ndarray:
    """(N, H, W, 3) float64 RGB in [0, 1] to segment: the request's images through the inverse of the model's
    normalisation where it is known (a LoadedModel), else each image's values rescaled to [0, 1] as a whole."""
    x = req.X.detach().to(device="cpu", dtype=torch.float64)
    norm = baselines.normalisation_of(req.model, None, None)
    if norm is not None:
        mean = torch.tensor(norm[0], dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(norm[1], dtype=torch.float64).view(1, 3, 1, 1)
        rgb = (x * std + mean).clamp(0.0, 1.0)
    else:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
        rgb = (x - low) / span
    return rgb.permute(0, 2, 3, 1).numpy()


def segment(image: np.ndarray, superpixels: str = "slic", segments: int = 50, compactness: float = 10.0,
            kernel_size: float = 4.0, max_dist: float = 200.0) -> np.ndarray:
    """(H, W) int64 superpixel labels 0 … M − 1 of ``image`` (H, W, 3) float RGB in [0, 1].

    "slic": ``skimage.segmentation.slic(image, n_segments=segments, compactness=compactness)``; "quickshift":
    ``quickshift(image, kernel_size=kernel_size, max_dist=max_dist, ratio=0.2)`` (LIME's image explainer's
    choice), its random tie-breaking seeded with scikit-image's default. Labels are renumbered in order of first
    appearance, so they run from 0 without gaps.
    """
    from skimage.segmentation import quickshift, slic  # imported here: only these methods need it

    if superpixels == "slic":
        labels = slic(image, n_segments=segments, compactness=compactness, start_label=0, channel_axis=-1)
    elif superpixels == "quickshift":
        labels = quickshift(image, kernel_size=kernel_size, max_dist=max_dist, ratio=QUICKSHIFT_RATIO,
                            channel_axis=-1)
    else:
        raise InvalidInputError(f"superpixels must be one of {SEGMENTATIONS}, got {superpixels!r}")
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # label -> its rank by first appearance
    return order[inverse].reshape(labels.shape).astype(np.int64)


def superpixel_labels(req: Request, superpixels: str = "slic", segments: int = 50, compactness: float = 10.0,
                kernel_size: float = 4.0, max_dist: float = 200.0) -> list[torch.Tensor]:
    """Each image's (H, W) int64 superpixel labels on the module's device: :func:`segment` of
    :func:`display_images`."""
    return [torch.from_numpy(segment(image, superpixels, segments, compactness, kernel_size, max_dist)).to(req.device)
            for image in display_images(req)]


# --------------------------------------------------------------------------- the fit

def weighted_linear_fit(Z: torch.Tensor, f: torch.Tensor, weights: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    """(M,) coefficients β of the weighted least squares f ≈ b + Z β, with the ridge penalty α‖β‖² (not on b).

    Z : (K, M), f : (K,), weights : (K,) >= 0; all float64. As scikit-learn's ``LinearRegression`` and ``Ridge``
    with ``sample_weight`` (the oracles' fits): the weighted means are subtracted, rows scaled by √w, then
    α = 0 is the minimum-norm least-squares solution (gelsd, for fewer distinct samples than superpixels) and
    α > 0 solves (AᵀA + αI) β = Aᵀb.
    """
    w = weights / weights.sum()
    zc = Z - (w[:, None] * Z).sum(dim=0)
    fc = f - (w * f).sum()
    root = weights.sqrt()
    A, b = root[:, None] * zc, root * fc
    if alpha == 0:
        driver = "gelsd" if A.device.type == "cpu" else None
        return torch.linalg.lstsq(A, b[:, None], driver=driver).solution[:, 0]
    eye = torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(A.T @ A + alpha * eye, A.T @ b)


def explain(req: Request, draw: Draw, weigh: Weigh, alpha: float, *, samples: int, superpixels: str, segments: int,
            compactness: float, kernel_size: float, max_dist: float, seed: int,
            baseline: str | torch.Tensor) -> MethodOutput:
    """The surrogate methods' run: superpixels, ``samples`` samples per image, one weighted linear fit per image
    and objective.

    ``draw(K, M, generator) -> (K, M) bool``, its first row all True; ``weigh(Z) -> (K,) float64`` weights of
    the samples Z (K, M) bool; ``alpha`` the ridge penalty.
    """
    reference, used = make_baseline(req, baseline)
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    labels = superpixel_labels(req, superpixels, segments, compactness, kernel_size, max_dist)
    counts = [int(s.max()) + 1 for s in labels]
    drawn: dict[int, torch.Tensor] = {}
    Z = []
    for m in counts:
        if m not in drawn:
            drawn[m] = draw(samples, m, seeded_generator(seed))
        Z.append(drawn[m].to(req.device))
    x = req.x()
    delta = x - reference
    height, width = x.shape[2:]
    per_image = samples - 1  # the first sample is the clean image
    values = {obj: torch.empty(req.n, samples, device=req.device, dtype=torch.float64) for obj in req.objectives}
    for obj, v in values.items():
        v[:, 0] = objective_per_image(logits, targets, obj, req.loss_sign).double()

    def build(start: int, stop: int) -> torch.Tensor:
        parts = []
        r = start
        while r < stop:
            n = r // per_image
            end = min(stop, (n + 1) * per_image)
            k = torch.arange(r - n * per_image, end - n * per_image, device=req.device) + 1
            kept = Z[n][k][:, labels[n].view(-1)].view(-1, 1, height, width).to(req.dtype)
            parts.append(reference[n] + kept * delta[n])
            r = end
        return torch.cat(parts)

    def consume(start: int, stop: int, got: dict[str, torch.Tensor]) -> None:
        rows = torch.arange(start, stop, device=req.device)
        for obj, v in got.items():
            values[obj][rows // per_image, rows % per_image + 1] = v.double()

    forward_rows(req, per_image, targets, build, consume)
    attributions = {obj: torch.empty_like(x) for obj in req.objectives}
    for n in range(req.n):
        z = Z[n].double()
        w = weigh(Z[n]).double()
        for obj in req.objectives:
            beta = weighted_linear_fit(z, values[obj][n], w, alpha)
            attributions[obj][n] = beta[labels[n]].to(req.dtype)[None]
    # How many superpixels each image had is not recorded with the parameters: a batch's pages (the Gallery) give
    # every image the call's parameters, and an image's record must not depend on the rest of its batch.
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, used=used)
