"""Guided IG: gradients integrated along an adaptive path that moves the features of smallest gradient first.

Kapishnikov, Venugopalan, Avci, Wedin, Terry & Birodkar, "Guided Integrated
Gradients: an Adaptive Path Method for Removing Noise", CVPR 2021. The path
starts at the baseline x′ and ends at x; at each of ``steps`` steps the L1
distance to x shrinks by 1/steps of the whole, and the features that move are
those whose |∂f/∂x| at the current point is smallest (a ``fraction`` of them at a
time), each kept within ``max_dist`` (in α, as a fraction of its own x − x′) of
the straight line. The attributions add up (x_{k+1} − x_k) ⊙ ∇f(x_k), f = s_y or
−L, so Σ attributions = f(x) − f(x′) up to the discretisation: how far the sum
misses it, relative to that change, is reported per image and objective
(``convergence``, as Integrated Gradients':
:func:`~saliency_core.methods.integrated_gradients.completeness_gap`).

Exactly PAIR's discretisation (``saliency.core.GuidedIG``, ``saliency==0.2.1``,
``guided_ig_impl``): the same α window, the L1 target of each step, the inner
loop that pulls laggards up to the window, selects the features with |g| at or
below the ``fraction`` quantile (numpy's "lower": the ⌊(D − 1) fraction⌋-th
smallest |g|, ties all selected; features already at the window's top are
excluded by an infinite |g|), moves them to the window's top while that is not
enough (γ > 1) and by the fraction γ of the way when it is, and stops a step
when the L1 distance is within 1e-9 (relative or absolute) of the target. The
path, the attributions and the L1 distances are float64 (PAIR's); each path
point is rounded once to the model's dtype. One gradient per step, at the
step's start: the inner loop reuses it (PAIR's too).

The path depends on the objective's gradient, so each objective has its own:
every image's and objective's path advances together, one row per (image,
objective) through the model per step, each row with one VJP, of its own
objective. Both objectives thus cost 2 rows per step and image (:func:`passes`).

The loss objective is used as −L (the target's log-probability), so that
positive attributions are evidence for the target. The selection reads |g|
only, so −L's path is +L's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from saliency_core.core import limits
from saliency_core.core.gradients import objective_per_image
from saliency_core.core.model_access import memory_format_of
from saliency_core.core.model_output import checked_forward
from saliency_core.core.passes import run_in_chunks
from saliency_core.core.precision import autocast_context, tf32_context
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import MethodOutput, Request, clean_forward, make_baseline, resolve_targets
from saliency_core.methods.declaration import AttributionMethod, Param, Passes, baseline_param
from saliency_core.methods.integrated_gradients import completeness_gap

#: Steps when not told: one 224 px map of the embedded model, both objectives, in about 8 s on a 2-core CPU (15.5 s
#: measured on a loaded machine where Blur IG's default 64 steps took 18.1 s, against its 8.9 s recorded); PAIR's
#: examples use 128.
STEPS = 48
#: PAIR's defaults.
FRACTION = 0.25
MAX_DIST = 0.02
#: PAIR's tolerance on the L1 distance (math.isclose's rel_tol and abs_tol).
EPSILON = 1e-9


def passes(steps: int = STEPS, **_params: object) -> Passes:
    """Per image, both objectives: 2 rows with gradients per step (one per path, each a forward pass and one VJP,
    of its own objective), and forward passes of the image and of its baseline (completeness). A row here has one
    VJP where a gradient row has two, so the price is high by about a third of these rows' backward share: Passes
    has no kind of row with one VJP, and too high is the safe side of a budget."""
    return Passes(gradient=2 * steps, forward=2)


def _check(fraction: float, max_dist: float) -> None:
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"fraction must be a number in (0, 1] (the share of features moved at a time), "
                                f"got {fraction!r}")
    if not 0 <= max_dist <= 1:
        raise InvalidInputError(f"max_dist must be a number in [0, 1] (how far in alpha a feature may leave the "
                                f"straight line), got {max_dist!r}")


def row_gradients(req: Request, points: torch.Tensor, targets: torch.Tensor, objectives: list[str]) -> torch.Tensor:
    """(R, ...) the gradient of each row's own objective (s_y, or −L as the method signs the loss) at ``points``
    ((R, 3, H, W) float64, rounded to the module's dtype), one forward and one VJP per chunk of rows, chunked by
    ``max_batch`` and the memory budget as :func:`~saliency_core.methods._common.gradient_rows`."""
    fmt = memory_format_of(req.module)
    is_score = torch.tensor([o == "score" for o in objectives], device=req.device)

    def step(start: int, stop: int) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad(), tf32_context(req.device, req.precision):
            # Fresh tensors made here: under the caller's inference_mode the inputs are inference tensors, which
            # autograd may not save.
            x = points[start:stop].to(req.dtype, copy=True).contiguous(memory_format=fmt).requires_grad_(True)
            with autocast_context(req.device, req.precision):
                logits = checked_forward(req.module, x, req.check)
            logits = logits.to(req.dtype)
            y = targets[start:stop].clone()
            f = torch.where(is_score[start:stop].clone(), objective_per_image(logits, y, "score"),
                            objective_per_image(logits, y, "loss", req.loss_sign))
            (g,) = torch.autograd.grad(f.sum(), x)
        return g.detach()

    parts = [g for _, _, g in run_in_chunks(points.shape[0], req.max_batch, req.device, step,
                                            input_row_bytes=req.row_bytes)]
    return torch.cat(parts).contiguous()


def kth_smallest(values: torch.Tensor, k: int, scratch: torch.Tensor | None) -> torch.Tensor:
    """(P,) the k-th smallest (1-based) of each row of ``values`` (P, D): on a CPU numpy's partition (8x faster
    than torch.kthvalue there), done in ``scratch`` (a tensor like ``values``, required there), elsewhere
    kthvalue (``scratch`` unused)."""
    if values.device.type == "cpu":
        work = scratch.numpy()
        np.copyto(work, values.numpy())
        work.partition(k - 1, axis=1)
        return torch.from_numpy(work[:, k - 1].copy())
    return values.kthvalue(k, dim=1).values


def row_sums(values: torch.Tensor) -> torch.Tensor:
    """(P,) the sum of each row of ``values`` (P, D) float64: numpy's pairwise sum on a CPU, PAIR's own, so that a
    step's gamma is PAIR's to the last bit (a last bit can decide which features are at the window's top)."""
    if values.device.type == "cpu":
        return torch.from_numpy(values.numpy().sum(axis=1))
    return values.sum(dim=1)


def guided_paths(x_in: torch.Tensor, x_base: torch.Tensor, grad_at: Callable[[torch.Tensor], torch.Tensor],
                 steps: int, fraction: float, max_dist: float,
                 report: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """PAIR's ``guided_ig_impl`` for P paths at once: x_in, x_base (P, D) float64; ``grad_at(x)`` gives the (P, D)
    gradients at the points x (P, D) float64. Returns (P, D) float64 attributions.

    PAIR adds (x − x_old) ⊙ g after every pass of its inner loop; with one g per step, these add up to
    (x_{k+1} − x_k) ⊙ g, added here once per step (the same up to the last bit). PAIR marks the features at the
    window's top (x = x_max) anew on every pass; they are those marked on the step's first pass and those a pass
    put there, which is how they are kept here. The (P, D) work arrays are made once (page faults on fresh
    arrays of this size cost as much as the arithmetic).
    """
    P, D = x_in.shape
    x = x_base.clone()
    diff = x_in - x_base
    moving = diff != 0
    safe_diff = torch.where(moving, diff, 1.0)
    l1_total = row_sums(diff.abs())
    attr = torch.zeros_like(x_in)
    x_start, x_min, x_max, work = (torch.empty_like(x_in) for _ in range(4))
    mask = torch.empty_like(moving)
    k = math.floor((D - 1) * fraction) + 1  # numpy's quantile(..., "lower"): the floor((D-1) q)-th (0-based)
    # Each pass that does not end a step puts at least one more feature at the window's top (or none can move).
    cap = D + 2
    for step in range(steps):
        grad = grad_at(x)
        absg = grad.abs()  # what the selection reads; +inf: excluded (PAIR's grad[x == x_max] = inf)
        scratch = torch.empty_like(absg) if absg.device.type == "cpu" else None  # kth_smallest's work
        x_start.copy_(x)
        alpha = (step + 1.0) / steps
        alpha_min = max(alpha - max_dist, 0.0)
        alpha_max = min(alpha + max_dist, 1.0)
        torch.mul(diff, alpha_min, out=x_min).add_(x_base)  # PAIR's diff * alpha + x_base, rounded alike
        torch.mul(diff, alpha_max, out=x_max).add_(x_base)
        l1_target = l1_total * (1 - (step + 1) / steps)
        active = torch.ones(P, dtype=torch.bool, device=x.device)
        for i in range(cap):
            if i == 0:
                # PAIR pulls the features behind the window up to its bottom on every pass; after the first, none
                # is behind: a pass moves features towards the window's top only, by at most the way there, and
                # an alpha rounded is as monotone as the point. (PAIR's alpha of a feature that does not move is
                # alpha_max: never behind.)
                if alpha_min > 0:
                    torch.sub(x, x_base, out=work).div_(safe_diff)
                    torch.lt(work, alpha_min, out=mask).logical_and_(moving)
                    torch.where(mask, x_min, x, out=x)
                torch.eq(x, x_max, out=mask)
                absg.masked_fill_(mask, math.inf)
            l1_current = row_sums(torch.sub(x, x_in, out=work).abs_())
            close = (l1_target - l1_current).abs() <= torch.maximum(
                EPSILON * torch.maximum(l1_target.abs(), l1_current.abs()), torch.full_like(l1_target, EPSILON))
            go = active & ~close
            if not go.any():
                break
            # |g| at or below the threshold, never an excluded (infinite) one: an infinite threshold is the
            # largest finite |g|'s.
            threshold = kth_smallest(absg, k, scratch).clamp(max=torch.finfo(absg.dtype).max)
            s = torch.le(absg, threshold[:, None], out=mask)
            if not go.all():
                s.logical_and_(go[:, None])
            l1_s = row_sums(torch.sub(x, x_max, out=work).abs_().mul_(s))
            positive = l1_s > 0
            gamma = torch.where(positive, (l1_current - l1_target) / torch.where(positive, l1_s, 1.0), math.inf)
            far = gamma > 1.0
            if not far.all():
                g = gamma.clamp(max=1.0)[:, None]  # used only where gamma <= 1
                near = s & ~far[:, None]
                torch.where(near, torch.sub(x_max, x, out=work).mul_(g).add_(x), x, out=x)
                s.logical_and_(far[:, None])
            torch.where(s, x_max, x, out=x)
            absg.masked_fill_(s, math.inf)  # now at the window's top
            active = go & far
            if not active.any():
                break
        attr.add_(torch.sub(x, x_start, out=work).mul_(grad))
        if report is not None:
            report(step + 1, steps)
    return attr


def run(req: Request, steps: int = STEPS, fraction: float = FRACTION, max_dist: float = MAX_DIST,
        baseline: str | torch.Tensor = "black") -> MethodOutput:
    """attributions[obj] = Σ_k (x_{k+1} − x_k) ⊙ ∇f(x_k) along each objective's guided path, f = s_y or −L;
    (N, 3, H, W) signed."""
    _check(fraction, max_dist)
    reference, used = make_baseline(req, baseline)
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    reference_logits = clean_forward(req, reference)
    x = req.x()
    objectives = list(req.objectives)
    f_x = {o: objective_per_image(logits, targets, o, req.loss_sign) for o in objectives}
    f_ref = {o: objective_per_image(reference_logits, targets, o, req.loss_sign) for o in objectives}

    # Paths image-major: row n * O + j is image n's path for objective j.
    n_obj, shape = len(objectives), x.shape[1:]
    x_in = x.double().flatten(1).repeat_interleave(n_obj, dim=0)
    x_base = reference.double().flatten(1).repeat_interleave(n_obj, dim=0)
    row_objectives = objectives * req.n
    row_targets = targets.repeat_interleave(n_obj)

    def grad_at(points: torch.Tensor) -> torch.Tensor:
        g = row_gradients(req, points.view(-1, *shape), row_targets, row_objectives)
        return g.reshape(points.shape[0], -1)

    total = req.n * n_obj * steps
    attr = guided_paths(x_in, x_base, grad_at, steps, fraction, max_dist,
                        report=lambda done, _: req.report(done * req.n * n_obj, total))
    attr = attr.view(req.n, n_obj, *shape)
    attributions, convergence = {}, {}
    for j, o in enumerate(objectives):
        attributions[o] = attr[:, j].to(req.dtype)
        convergence[o] = completeness_gap(attr[:, j].sum(dim=(1, 2, 3)).to(req.dtype), f_x[o], f_ref[o])
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, convergence=convergence, used=used)


METHOD = AttributionMethod(
    name="guided_ig", title="Guided IG", citation="Kapishnikov et al. 2021",
    summary="the gradient integrated along an adaptive path from a baseline x′ to the image that moves the features "
            "of smallest gradient first",
    params=(Param("steps", STEPS, int, "steps along the guided path, each one gradient at the current point "
                  "(PAIR's default: 128)", minimum=1, maximum=limits.MAX_PASSES, costly=True),
            Param("fraction", FRACTION, float, "the share of features (smallest |gradient| first) moved at a time "
                  "within a step", minimum=0.0, maximum=1.0),
            Param("max_dist", MAX_DIST, float, "how far in alpha (0 to 1) a feature may stray from the straight "
                  "line: 0 is Integrated Gradients' path, 1 unbounded", minimum=0.0, maximum=1.0),
            baseline_param("black")),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False, family="path",
    needs=frozenset({"baseline"}),
    gap_note="more steps reduce it; the path bends with the gradients, so a few steps may miss more than IG's",
)
