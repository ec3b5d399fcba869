"""Blur IG: gradients integrated along a path of Gaussian blurs, from a fully blurred image to the image.

Xu, Venugopalan & Sundararajan, "Attribution in Scale and Space", CVPR 2020.
With G(x, σ) the image blurred with a Gaussian of standard deviation σ
(G(x, 0) = x), the path runs from G(x, σ_max) to x, and

    attribution = −Σ_{k=0}^{steps−1} (σ_{k+1} − σ_k) · (G(x, σ_k + h) − G(x, σ_k)) / h ⊙ ∇f(G(x, σ_k))

(f = s_y or −L), exactly PAIR's discretisation (``saliency.core.BlurIG``,
``saliency==0.2.1``): a left Riemann sum in σ from σ_0 = 0 (the image) that
leaves out σ_steps, ∂G/∂σ by a forward difference of step h (``grad_step``),
and σ_k = k σ_max / steps, or with ``spacing="sqrt"`` (PAIR's ``sqrt=True``)
σ_k = sqrt(k σ_max / steps), whose path ends at sqrt(σ_max), as PAIR's does.
(PAIR, with ``batch_size`` > 1 and ``sqrt=True``, weights every point of a batch
by the batch's last σ difference; here each point has its own.) Completeness
says Σ attributions = f(x) − f(G(x, σ_steps)); how far the sum misses it, relative
to that change, is reported per image and objective (``convergence``, as
Integrated Gradients': :func:`~saliency_core.methods.integrated_gradients.completeness_gap`).

The blur is scipy's ``gaussian_filter(mode="constant")`` (PAIR's): the kernel
cut at 4 σ, the image padded with zeros of *pixel* space, so that towards
σ_max the image fades to black at its border. It is computed in the model's
normalised input space, where the engine's images are, padded with black
through the model's normalisation ((0 − mean) / std): a blur is linear and
its kernel sums to 1, so this is PAIR's blur of the pixel image, normalised
(:func:`saliency_core.core.baselines.gaussian_blur`, padding "zeros", on
x − black). A bare module, whose normalisation is unknown, is padded with 0
of its input space: PAIR's blur of the input as given. The blurs and their
difference are computed in float64 (a difference over h = 0.01 loses two
digits) and each path point is rounded once to the model's dtype.

``max_sigma`` and ``grad_step`` are in pixels of a 224 px image (PAIR's 50
and 0.01 there); another size scales both by min(H, W) / 224, as the "blur"
baseline's sigma, so that the path looks the same at any resolution
(recorded: ``max_sigma_px``, the σ_max used).

The loss objective is used as −L (the target's log-probability), so that
positive attributions are evidence for the target.
"""

from __future__ import annotations

import math

import torch

from saliency_core.core import limits
from saliency_core.core.baselines import gaussian_blur, normalisation_of
from saliency_core.core.gradients import objective_per_image
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    add_rows_per_image,
    clean_forward,
    gradient_rows,
    resolve_targets,
)
from saliency_core.methods.declaration import AttributionMethod, Param, Passes
from saliency_core.methods.integrated_gradients import completeness_gap

#: Points on the path when not told: one 224 px map of the embedded model, both objectives, in about 10 s on a
#: 2-core CPU (a gradient row costs about 0.1 s there; PAIR's default is 100).
STEPS = 64
#: PAIR's defaults, in pixels at 224 px.
MAX_SIGMA = 50.0
GRAD_STEP = 0.01
SPACINGS = ("linear", "sqrt")
#: The side at which max_sigma and grad_step are in pixels as given.
SIZE = 224


def sigmas(steps: int, max_sigma: float, spacing: str) -> list[float]:
    """σ_0 … σ_steps in pixels, with PAIR's float arithmetic: k σ_max / steps, or its square root."""
    if spacing == "sqrt":
        return [math.sqrt(float(k) * max_sigma / float(steps)) for k in range(steps + 1)]
    return [float(k) * max_sigma / float(steps) for k in range(steps + 1)]


def scale_of(shape: torch.Size | tuple[int, ...]) -> float:
    """How the pixels of ``max_sigma`` and ``grad_step`` scale for images of ``shape`` (..., H, W)."""
    return min(shape[-2:]) / SIZE


def passes(steps: int = STEPS, **_params: object) -> Passes:
    """Per image: one gradient row per point of the path, forward passes of the image and of its fully blurred
    copy (completeness)."""
    return Passes(gradient=steps, forward=2)


def _check(max_sigma: float, grad_step: float) -> None:
    if not max_sigma > 0:
        raise InvalidInputError(f"max_sigma must be a number > 0 (the blur's sigma at the path's start), got "
                                f"{max_sigma!r}")
    if not grad_step > 0:
        raise InvalidInputError(f"grad_step must be a number > 0 (the step of the blur's derivative in sigma), "
                                f"got {grad_step!r}")


def _padding(req: Request, x: torch.Tensor) -> torch.Tensor:
    """(1, 3, 1, 1) float64: black through the model's normalisation, or 0 where it is unknown."""
    norm = normalisation_of(req.model, None, None)
    if norm is None:
        return torch.zeros((1, x.shape[1], 1, 1), device=x.device, dtype=torch.float64)
    mean, std = (torch.tensor([float(v) for v in t], device=x.device, dtype=torch.float64).view(1, -1, 1, 1)
                 for t in norm)
    return (0.0 - mean) / std


def run(req: Request, steps: int = STEPS, max_sigma: float = MAX_SIGMA, grad_step: float = GRAD_STEP,
        spacing: str = "linear") -> MethodOutput:
    """attributions[obj] = −Σ_k Δσ_k ∂G/∂σ(σ_k) ⊙ ∇f(G(x, σ_k)), f = s_y or −L; (N, 3, H, W) signed."""
    _check(max_sigma, grad_step)
    x = req.x()
    scale = scale_of(x.shape)
    sig = sigmas(steps, max_sigma * scale, spacing)
    h = grad_step * scale
    black = _padding(req, x)
    shifted = x.double() - black  # the pixels' zero padding is black's

    def blur(n: int, sigma: float) -> torch.Tensor:
        """(3, H, W) float64: G(x_n, σ)."""
        if sigma == 0:
            return x[n].double()  # PAIR's: the image itself
        return (gaussian_blur(shifted[n:n + 1], sigma, padding="zeros") + black)[0]

    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    end = torch.stack([blur(n, sig[-1]) for n in range(req.n)]).to(req.dtype)
    end_logits = clean_forward(req, end)
    f_x = {o: objective_per_image(logits, targets, o, req.loss_sign) for o in req.objectives}
    f_end = {o: objective_per_image(end_logits, targets, o, req.loss_sign) for o in req.objectives}

    sums = {o: torch.zeros(x.shape, device=req.device, dtype=torch.float64) for o in req.objectives}
    directions: dict[tuple[int, int], torch.Tensor] = {}

    def build(start: int, stop: int) -> torch.Tensor:
        points, dirs = [], []
        for r in range(start, stop):
            n, k = divmod(r, steps)
            point = blur(n, sig[k])
            # −Δσ_k ∂G/∂σ: the path runs from the blurred image to x, against σ.
            dirs.append((blur(n, sig[k] + h) - point) * (-(sig[k + 1] - sig[k]) / h))
            points.append(point)
        directions[(start, stop)] = torch.stack(dirs)
        return torch.stack(points).to(req.dtype)

    def consume(start: int, stop: int, grads: dict[str, torch.Tensor]) -> None:
        d = directions.pop((start, stop))
        for o, g in grads.items():
            add_rows_per_image(sums[o], start, stop, steps, g.double() * d)

    gradient_rows(req, steps, targets, build, consume)
    attributions, convergence = {}, {}
    for o, s in sums.items():
        attributions[o] = req.signed(o, s).to(req.dtype)  # the rows ran +L
        convergence[o] = completeness_gap(req.signed(o, s).sum(dim=(1, 2, 3)).to(req.dtype), f_x[o], f_end[o])
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, convergence=convergence,
                        used={"max_sigma_px": max_sigma * scale})


METHOD = AttributionMethod(
    name="blur_ig", title="Blur IG", citation="Xu et al. 2020",
    summary="the gradient integrated along a path of Gaussian blurs, from a fully blurred image to the image",
    params=(Param("steps", STEPS, int, "points on the blur path (PAIR's default: 100)", minimum=1,
                  maximum=limits.MAX_PASSES, costly=True),
            Param("max_sigma", MAX_SIGMA, float, "the blur at the path's start, sigma in pixels of a 224 px image "
                  "(scaled with the image's side)", minimum=0.0, maximum=float(SIZE)),
            Param("grad_step", GRAD_STEP, float, "the step in sigma of the blur's derivative (finite difference), "
                  "in pixels of a 224 px image", minimum=0.0, maximum=1.0),
            Param("spacing", "linear", str, "sigma along the path: linear in the step, or its square root "
                  "(PAIR's sqrt=True: the path then ends at sqrt(max_sigma))", SPACINGS)),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False, family="path",
    gap_note="more steps reduce it",
)
