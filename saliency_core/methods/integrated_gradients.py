"""Integrated Gradients: (x − x′) ⊙ the gradient averaged along the straight path from x′ to x.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML
2017: ``IG(x) = (x − x′) ⊙ ∫₀¹ ∇f(x′ + α (x − x′)) dα``, with the integral
taken by a quadrature rule of ``steps`` points:

- "trapezoid": α_k = k / (n − 1), k = 0 … n − 1, weights 1/(n − 1) with
  half weights at both ends; the weights sum to 1. (Captum's
  "riemann_trapezoid" uses 1/n with half ends, summing to (n − 1)/n: its
  attributions are (n − 1)/n of these.)
- "gauss_legendre": numpy's Gauss–Legendre nodes and weights mapped to
  [0, 1], as Captum's "gausslegendre".

The loss objective is used as −L (the target's log-probability), so that
positive attributions are evidence for the target. Completeness says
Σ IG = f(x) − f(x′); the relative gap is reported per image and objective
(``convergence``) and a warning is raised when it is large.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from saliency_core.core import limits
from saliency_core.core.gradients import objective_per_image
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    add_rows_per_image,
    clean_forward,
    gradient_rows,
    make_baseline,
    resolve_targets,
)
from saliency_core.methods.declaration import AttributionMethod, AttributionWarning, Param, Passes, baseline_param

RULES = ("trapezoid", "gauss_legendre")
#: Warn when |Σ IG − (f(x) − f(x′))| exceeds this fraction of |f(x) − f(x′)|.
GAP_WARNING = 0.1


def path_rule(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights), float64 arrays of ``steps`` points in [0, 1]; the weights sum to 1."""
    if rule == "trapezoid":
        if steps < 2:
            raise InvalidInputError(f'the trapezoid rule needs steps >= 2, got {steps}')
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    if rule == "gauss_legendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * w
    raise InvalidInputError(f"rule must be one of {RULES}, got {rule!r}")


def passes(steps: int = 32, **_params: object) -> Passes:
    """Per image: forward passes of the image and of its baseline (completeness), one gradient row per step."""
    return Passes(gradient=steps, forward=2)


def run(req: Request, steps: int = 32, baseline: str | torch.Tensor = "black",
        rule: str = "trapezoid") -> MethodOutput:
    """attributions[obj] = (x − x′) ⊙ Σ_k w_k ∇f(x′ + α_k (x − x′)), f = s_y or −L; (N, 3, H, W) signed."""
    alphas_np, weights_np = path_rule(rule, steps)
    reference, used = make_baseline(req, baseline)
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    reference_logits = clean_forward(req, reference)
    x = req.x()
    delta = x - reference
    alphas = torch.tensor(alphas_np, device=req.device, dtype=req.dtype)
    weights = torch.tensor(weights_np, device=req.device, dtype=req.dtype)
    sums = {obj: torch.zeros_like(x) for obj in req.objectives}

    def build(start: int, stop: int) -> torch.Tensor:
        rows = torch.arange(start, stop, device=req.device)
        n, k = rows // steps, rows % steps
        return reference[n] + alphas[k].view(-1, 1, 1, 1) * delta[n]

    def consume(start: int, stop: int, grads: dict[str, torch.Tensor]) -> None:
        w = weights[torch.arange(start, stop, device=req.device) % steps].view(-1, 1, 1, 1)
        for obj, g in grads.items():
            add_rows_per_image(sums[obj], start, stop, steps, g * w)

    gradient_rows(req, steps, targets, build, consume)
    attributions, convergence = {}, {}
    for obj, s in sums.items():
        attributions[obj] = req.signed(obj, delta * s)  # the rows ran +L
        change = (objective_per_image(logits, targets, obj, req.loss_sign)
                  - objective_per_image(reference_logits, targets, obj, req.loss_sign))
        convergence[obj] = (attributions[obj].sum(dim=(1, 2, 3)) - change) / change.abs().clamp_min(1e-12)
        worst = float(convergence[obj].abs().max())
        if worst > GAP_WARNING:
            warnings.warn(
                f"Integrated Gradients ({obj}): the completeness gap is {worst:.0%} of |f(x) - f(x')| for at "
                f"least one image; use more steps (now {steps})"
                + ("" if rule == "gauss_legendre" else " or rule='gauss_legendre'"),
                AttributionWarning, stacklevel=3,
            )
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, convergence=convergence,
                        used=used)


METHOD = AttributionMethod(
    name="integrated_gradients", title="Integrated Gradients", citation="Sundararajan, Taly & Yan 2017",
    summary="(x − x′) ⊙ the gradient averaged along the straight path from x′ to x",
    params=(Param("steps", 32, int, "points on the path", minimum=2, maximum=limits.MAX_PASSES, costly=True),
            baseline_param("black"),
            Param("rule", "trapezoid", str, "quadrature rule along the path", RULES)),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False, needs=frozenset({"baseline"}),
    family="path",
)
