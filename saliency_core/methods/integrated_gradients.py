"""Integrated Gradients: (x − x′) ⊙ the gradient averaged along the straight path from x′ to x.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML
2017: ``IG(x) = (x − x′) ⊙ ∫₀¹ ∇f(x′ + α (x − x′)) dα``. Completeness says
Σ IG = f(x) − f(x′); how far a quadrature of the integral misses it, relative
to the change (:func:`completeness_gap`), is reported per image and objective
(``convergence``). The integral is taken by one of three rules:

- "adaptive" (the default): the trapezoid rule on the path cut into
  :data:`SEGMENTS` equal segments, each refined on its own by halving its
  intervals (nested grids: every point computed stays in use) where it is
  least accurate, until two estimates are within ``tolerance`` (5 %) for
  every objective asked, or ``steps`` points (256) are used: the
  completeness gap (the segments' own gaps, f at their ends minus the
  integral over them, added without their signs, so that errors of
  opposite sign cannot cancel) and the attributions themselves (how much
  each segment's moved at its last halving, in root-sum-square over
  ‖IG‖₂: the gap is one number for all pixels, and on the embedded model a
  map whose gap was 1.4 % was still 8.7 % from a 1,025-point trapezoid).
  An image stops when it is done: easy images take few points, hard ones
  more. The model's gradients change fast near a black baseline: on
  EfficientNet-Lite0 62–98 % of the trapezoid's error lies in the first
  tenth of the path, where the segments are halved most. The
  steps and the gap each image reached are reported (``steps_used``,
  ``converged``, ``convergence``). Each segment keeps its own running sum
  of gradients, as large as the images, per objective, and a round holds
  the midpoint sums of the segments it halves: up to 16x the fixed rules'
  one sum (19 MB for a 224 px image and both objectives). Choosing the
  steps per image is the question of "The Impact of Integration Step on
  Integrated Gradients" (EACL 2024 SRW) and of Swain & Singhi, "Riemann
  Sum Optimization for Accurate Integrated Gradients Computation" (2024).
- "trapezoid": α_k = k / (n − 1), k = 0 … n − 1, weights 1/(n − 1) with
  half weights at both ends; the weights sum to 1. (Captum's
  "riemann_trapezoid" uses 1/n with half ends, summing to (n − 1)/n: its
  attributions are (n − 1)/n of these.)
- "gauss_legendre": numpy's Gauss–Legendre nodes and weights mapped to
  [0, 1], as Captum's "gausslegendre".

The fixed rules take ``steps`` points (32 when None) and warn when a gap
exceeds :data:`GAP_WARNING`; the adaptive rule takes at most ``steps`` (256
when None) and warns when an image missed its tolerance.

The loss objective is used as −L (the target's log-probability), so that
positive attributions are evidence for the target.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from saliency_core.core import limits
from saliency_core.core.gradients import VJPs, objective_per_image
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    add_rows_per_image,
    clean_forward,
    gradient_rows,
    make_baseline,
    resolve_targets,
    vjp_rows,
)
from saliency_core.methods.declaration import AttributionMethod, AttributionWarning, Param, Passes, baseline_param

RULES = ("adaptive", "trapezoid", "gauss_legendre")
#: Points of the fixed rules when ``steps`` is None (the default before the adaptive rule).
FIXED_STEPS = 32
#: The adaptive rule's most points per image when ``steps`` is None: the dashboard's cap.
ADAPTIVE_STEPS = limits.MAX_PASSES
#: The adaptive rule's default tolerance on the completeness gap.
TOLERANCE = 0.05
#: Segments the adaptive rule refines apart; each keeps a running sum of gradients as large as the images.
SEGMENTS = 8
#: The fixed rules warn when |Σ IG − (f(x) − f(x′))| exceeds this fraction of |f(x) − f(x′)|.
GAP_WARNING = 0.1
#: The gap's denominator is at least this fraction of |f(x)| + |f(x′)| (see :func:`completeness_gap`) ...
GAP_FLOOR = 0.01
#: ... and at least this (both values 0).
GAP_FLOOR_ABS = 1e-6


def path_rule(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of a fixed rule, float64 arrays of ``steps`` points in [0, 1]; the weights sum to 1."""
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
    raise InvalidInputError(f"rule must be one of {RULES[1:]} (fixed rules), got {rule!r}")


def gap_scale(f_x: torch.Tensor, f_ref: torch.Tensor) -> torch.Tensor:
    """(N,) what a completeness gap is measured against: |f(x) − f(x′)|, but at least 1 % of |f(x)| + |f(x′)|.

    Below that floor the change is a small difference of two larger numbers, and a gap relative to it says
    nothing about the integral: attributions equal to Captum's to 1e-7 read as a 200 % gap when f(x) ≈ f(x′).
    On the floor, a gap of 5 % is an error of 0.05 % of the objective's own size. (1e-6 when both are 0.)
    """
    return torch.maximum((f_x - f_ref).abs(), GAP_FLOOR * (f_x.abs() + f_ref.abs())).clamp_min(GAP_FLOOR_ABS)


def completeness_gap(total: torch.Tensor, f_x: torch.Tensor, f_ref: torch.Tensor) -> torch.Tensor:
    """(N,) signed relative gap (Σ attributions − (f(x) − f(x′))) / :func:`gap_scale`; ``total`` = Σ attributions."""
    return (total - (f_x - f_ref)) / gap_scale(f_x, f_ref)


def settle(values: dict[str, object]) -> dict[str, object]:
    """steps None -> the rule's own (:data:`FIXED_STEPS`, :data:`ADAPTIVE_STEPS`); no tolerance for a fixed rule
    (it does not use one: the record of a fixed rule is what it was before the adaptive rule)."""
    if values.get("steps") is None:
        values["steps"] = ADAPTIVE_STEPS if values.get("rule") == "adaptive" else FIXED_STEPS
    if values.get("rule") != "adaptive":
        values.pop("tolerance", None)
    return values


def passes(steps: int = ADAPTIVE_STEPS, **_params: object) -> Passes:
    """Per image: forward passes of the image and of its baseline (completeness), one gradient row per point:
    the fixed rules' ``steps``, the adaptive rule's most (what a budget must allow for)."""
    return Passes(gradient=steps, forward=2)


def run(req: Request, steps: int = ADAPTIVE_STEPS, baseline: str | torch.Tensor = "black", rule: str = "adaptive",
        tolerance: float = TOLERANCE) -> MethodOutput:
    """attributions[obj] = (x − x′) ⊙ Σ_k w_k ∇f(x′ + α_k (x − x′)), f = s_y or −L; (N, 3, H, W) signed."""
    if rule != "adaptive":
        path_rule(rule, steps)  # refuse a bad rule or step count before any pass
    elif steps < 2:
        raise InvalidInputError(f"the adaptive rule needs steps >= 2, got {steps}")
    reference, used = make_baseline(req, baseline)
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    reference_logits = clean_forward(req, reference)
    x = req.x()
    f_x = {o: objective_per_image(logits, targets, o, req.loss_sign) for o in req.objectives}
    f_ref = {o: objective_per_image(reference_logits, targets, o, req.loss_sign) for o in req.objectives}
    converged = None
    if rule == "adaptive":
        sums, steps_used, converged = _adaptive(req, x, reference, targets, f_x, f_ref, steps, tolerance)
    else:
        sums = _fixed(req, x, reference, targets, rule, steps)
        steps_used = torch.full((req.n,), steps, dtype=torch.int64)
    attributions, convergence = {}, {}
    for obj, s in sums.items():
        attributions[obj] = req.signed(obj, (x - reference) * s)  # the rows ran +L
        convergence[obj] = completeness_gap(attributions[obj].sum(dim=(1, 2, 3)), f_x[obj], f_ref[obj])
    _warn(convergence, rule, steps, tolerance, converged)
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, convergence=convergence,
                        steps_used=steps_used.to(req.device), converged=converged, used=used)


def _warn(convergence: dict[str, torch.Tensor], rule: str, steps: int, tolerance: float,
          converged: torch.Tensor | None) -> None:
    """An AttributionWarning when a result should not be trusted: a fixed rule's gap above GAP_WARNING, or an
    image the adaptive rule stopped at its cap short of the tolerance. Silent otherwise."""
    if converged is not None:
        missed = int((~converged).sum())
        if missed:
            worst = max(float(c.abs().max()) for c in convergence.values())
            warnings.warn(
                f"Integrated Gradients (adaptive): {missed} of {len(converged)} image(s) did not reach the "
                f"{tolerance * 100:g} % tolerance within {steps} steps (completeness gap up to {worst:.0%}); allow "
                "more steps or a larger tolerance", AttributionWarning, stacklevel=4)
        return
    for obj, c in convergence.items():
        worst = float(c.abs().max())
        if worst > GAP_WARNING:
            warnings.warn(
                f"Integrated Gradients ({obj}): the completeness gap is {worst:.0%} of |f(x) - f(x')| for at "
                f"least one image; use more steps (now {steps}) or rule='adaptive'",
                AttributionWarning, stacklevel=4,
            )


def _fixed(req: Request, x: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor, rule: str,
           steps: int) -> dict[str, torch.Tensor]:
    """objective -> (N, 3, H, W) Σ_k w_k ∇(+L or s_y) at a fixed rule's points (the maps of before the adaptive
    rule, bit for bit)."""
    alphas_np, weights_np = path_rule(rule, steps)
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
    return sums


def first_segments(steps: int) -> int:
    """How many segments the adaptive rule starts with for at most ``steps`` points: the largest power of two
    up to :data:`SEGMENTS` whose grid (segments + 1 points) fits."""
    return 1 << min(SEGMENTS.bit_length() - 1, (steps - 1).bit_length() - 1)


def _adaptive(req: Request, x: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor,
              f_x: dict[str, torch.Tensor], f_ref: dict[str, torch.Tensor], cap: int, tolerance: float
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The adaptive rule: (objective -> (N, 3, H, W) Σ w ∇, (N,) points used, (N,) tolerance met).

    Segment r = [r/S, (r+1)/S] at level l holds 2^l intervals of width h = 1/(S 2^l), its running sum
    A_r = h Σ' ∇f (trapezoid, half weights at its ends) and f, g = ∇f · (x − x′) at its points. Halving its
    intervals adds the midpoints only: A_r ← A_r / 2 + h/2 Σ ∇f(midpoints). Two estimates of its error:

    - its gap e_r = f(end) − f(start) − h Σ' g, exactly how far its share of Σ IG misses its share of the
      change (the e_r add up to the completeness gap);
    - the change of its attributions at its last halving, c_r = ‖(x − x′) ⊙ (A_r − A_r before)‖₂ (the
      difference of successive trapezoids: about 3x the error of the finer one where the gradients are
      smooth, about 1x across kinks), infinite before its first halving. The gap is one number for all
      pixels and hides errors of opposite signs; c_r sees every pixel.

    An image is done when, for every objective, Σ |e_r| ≤ tolerance · |f(x) − f(x′)| (floored) and
    √(Σ c_r²) ≤ tolerance · ‖IG‖₂. Until then each round halves the segments over their share (|e_r| above
    1/S of the first budget, c_r above 1/√S of the second), the worst first, as many as fit under the cap,
    all images' rows through the model together.
    """
    n, objectives = req.n, req.objectives
    segments = first_segments(cap)
    delta = x - reference
    scale = {o: gap_scale(f_x[o], f_ref[o]).double().cpu().numpy() for o in objectives}
    acc = {o: torch.zeros((segments, *x.shape), device=req.device, dtype=req.dtype) for o in objectives}
    level = np.zeros((n, segments), dtype=np.int64)
    change = {o: np.full((n, segments), np.inf) for o in objectives}
    # f and g at each segment's points, in order along the path: values[o][0 or 1][image][segment].
    values: dict[str, list[list[list[np.ndarray]]]] = {
        o: [[[np.empty(0)] * segments for _ in range(n)] for _ in range(2)] for o in objectives}
    used = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    converged = np.zeros(n, dtype=bool)
    total, reported = n * cap, [0, 0, 0]  # rows run, rows that images done will not need, the last report

    # Round 0: the uniform grid of segments + 1 points; point j is the end of segment j−1 and the start of j.
    plan: list[tuple[int, int, int]] = [(i, -1, j) for i in range(n) for j in range(segments + 1)]
    while plan:
        rows = _round_rows(plan, level, segments)
        halved = [(i, r) for i, r, _ in plan if r >= 0]
        mids = {o: torch.zeros((len(halved), *x.shape[1:]), device=req.device, dtype=req.dtype)
                for o in objectives}
        fg = _run_round(req, rows, x, reference, delta, targets, acc, mids, reported, total)
        for slot, (i, r) in enumerate(halved):
            for o in objectives:
                before = acc[o][r, i].clone()
                acc[o][r, i].mul_(0.5).add_(mids[o][slot])
                change[o][i, r] = float(torch.linalg.vector_norm((delta[i] * (acc[o][r, i] - before)).double()))
        del mids
        _store_round(plan, fg, level, values, segments, used)
        plan = []
        for i in np.flatnonzero(~done):
            over = np.zeros(segments)  # each segment's worst estimate over its share of the budget
            ok = True
            for o in objectives:
                gaps = np.abs(_segment_gaps(values[o], i, level[i], segments)) / scale[o][i]
                size = max(float(torch.linalg.vector_norm((delta[i] * acc[o][:, i].sum(dim=0)).double())), 1e-30)
                changes = change[o][i] / size
                ok = ok and gaps.sum() <= tolerance and float(np.sqrt((changes ** 2).sum())) <= tolerance
                over = np.maximum(over, np.maximum(gaps * segments, changes * np.sqrt(segments)))
            if ok:
                done[i] = converged[i] = True
            else:
                room = cap - used[i]
                for r in np.argsort(-over, kind="stable"):
                    if over[r] > tolerance and (cost := 1 << int(level[i, r])) <= room:
                        plan.append((int(i), int(r), 0))
                        room -= cost
                done[i] = room == cap - used[i]  # nothing fits under the cap: stop short of the tolerance
            if done[i]:
                reported[1] += cap - int(used[i])
        _report(req, reported, total)
    sums = {o: a.sum(dim=0) for o, a in acc.items()}
    return sums, torch.from_numpy(used), torch.from_numpy(converged).to(req.device)


def _round_rows(plan: list[tuple[int, int, int]], level: np.ndarray, segments: int) -> dict[str, np.ndarray]:
    """The rows of one round, in plan order: image, α, the two segments a round-0 row's gradient joins (−1:
    none) and its weight there, or the slot of a midpoint's halved segment (−1 in round 0). A plan entry
    (i, −1, j) is point j of round 0; (i, r, 0) all midpoints of segment r."""
    image, alpha, seg_a, seg_b, weight, slot = [], [], [], [], [], []
    halved = 0
    for i, r, j in plan:
        if r < 0:
            image.append(i)
            alpha.append(j / segments)
            seg_a.append(j - 1 if j > 0 else -1)
            seg_b.append(j if j < segments else -1)
            weight.append(0.5 / segments)
            slot.append(-1)
            continue
        parts = 1 << int(level[i, r] + 1)  # intervals after halving
        k = np.arange(1, parts, 2)
        image += [i] * len(k)
        alpha += list((r + k / parts) / segments)
        seg_a += [-1] * len(k)
        seg_b += [-1] * len(k)
        weight += [1.0 / (segments * parts)] * len(k)
        slot += [halved] * len(k)
        halved += 1
    return {"image": np.array(image), "alpha": np.array(alpha, dtype=np.float64), "seg_a": np.array(seg_a),
            "seg_b": np.array(seg_b), "weight": np.array(weight, dtype=np.float64), "slot": np.array(slot)}


def _run_round(req: Request, rows: dict[str, np.ndarray], x: torch.Tensor, reference: torch.Tensor,
               delta: torch.Tensor, targets: torch.Tensor, acc: dict[str, torch.Tensor],
               mids: dict[str, torch.Tensor], reported: list[int], total: int
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Runs a round's rows, adds their weighted gradients to the segments' sums (round 0) or to the midpoint
    sums of the segments halved (``mids``, by slot), row by row: a fixed order, the same bits on CUDA; returns
    objective -> (f, g) per row, float64."""
    image = torch.from_numpy(rows["image"]).to(req.device)
    alpha = torch.from_numpy(rows["alpha"]).to(device=req.device, dtype=req.dtype)
    count = len(rows["image"])
    out = {o: (np.empty(count), np.empty(count)) for o in req.objectives}
    before = reported[0]

    def build(start: int, stop: int) -> torch.Tensor:
        i = image[start:stop]
        # lerp is exact at both ends: the row at α = 1 is the image itself, at α = 0 the baseline.
        return torch.lerp(reference[i], x[i], alpha[start:stop].view(-1, 1, 1, 1))

    def consume(start: int, stop: int, vjps: VJPs) -> None:
        for o in req.objectives:
            grads = vjps.grads[o]
            for k in range(start, stop):
                w = float(rows["weight"][k])
                if rows["slot"][k] >= 0:
                    mids[o][rows["slot"][k]].add_(grads[k - start], alpha=w)
                for seg in (rows["seg_a"][k], rows["seg_b"][k]):
                    if seg >= 0:
                        acc[o][seg, rows["image"][k]].add_(grads[k - start], alpha=w)
            f = objective_per_image(vjps.logits, targets[image[start:stop]], o, req.loss_sign)
            g = (req.signed(o, grads) * delta[image[start:stop]]).flatten(1).sum(dim=1, dtype=torch.float64)
            out[o][0][start:stop] = f.double().cpu().numpy()
            out[o][1][start:stop] = g.cpu().numpy()
        reported[0] = before + stop
        _report(req, reported, total)

    vjp_rows(req, targets[image], build, consume)
    return out


def _store_round(plan: list[tuple[int, int, int]], fg: dict[str, tuple[np.ndarray, np.ndarray]],
                 level: np.ndarray, values: dict[str, list[list[list[np.ndarray]]]], segments: int,
                 used: np.ndarray) -> None:
    """Puts a round's f and g among the segments' points (midpoints between the old ones) and counts them."""
    row = 0
    for i, r, j in plan:
        if r < 0:
            for o, pair in fg.items():
                for which in (0, 1):
                    v = pair[which][row]
                    if j > 0:
                        values[o][which][i][j - 1] = np.append(values[o][which][i][j - 1], v)
                    if j < segments:
                        values[o][which][i][j] = np.array([v])
            used[i] += 1
            row += 1
            continue
        new = 1 << int(level[i, r])  # midpoints added: one per old interval
        for o, pair in fg.items():
            for which in (0, 1):
                old = values[o][which][i][r]
                merged = np.empty(2 * new + 1)
                merged[0::2], merged[1::2] = old, pair[which][row:row + new]
                values[o][which][i][r] = merged
        level[i, r] += 1
        used[i] += new
        row += new


def _segment_gaps(values: list[list[list[np.ndarray]]], i: int, level: np.ndarray, segments: int) -> np.ndarray:
    """(S,) e_r = f(end) − f(start) − h Σ' g of image i's segments: their shares of its completeness gap, with
    the sign of change − Σ IG."""
    out = np.empty(segments)
    for r in range(segments):
        f, g = values[0][i][r], values[1][i][r]
        h = 1.0 / (segments * (1 << int(level[r])))
        out[r] = (f[-1] - f[0]) - h * (g.sum() - 0.5 * (g[0] + g[-1]))
    return out


def _report(req: Request, reported: list[int], total: int) -> None:
    """Progress in rows of the declared total (every image's cap): rows run plus rows that images done early
    will not need, so the bar ends at its total however soon they stop."""
    done = min(total, reported[0] + reported[1])
    if done != reported[2]:
        reported[2] = done
        req.report(done, total)


METHOD = AttributionMethod(
    name="integrated_gradients", title="Integrated Gradients", citation="Sundararajan, Taly & Yan 2017",
    summary="(x − x′) ⊙ the gradient averaged along the straight path from x′ to x",
    params=(Param("steps", None, int, "points on the path: the fixed rules' number, the adaptive rule's most",
                  minimum=2, maximum=limits.MAX_PASSES, costly=True, none_ok=True,
                  none_text=f"the rule's: {FIXED_STEPS} (trapezoid, gauss_legendre), at most {ADAPTIVE_STEPS} "
                            "(adaptive)"),
            baseline_param("black"),
            Param("rule", "adaptive", str, "quadrature rule along the path: adaptive refines it until the "
                  "completeness gap is within the tolerance; trapezoid and gauss_legendre take a fixed number "
                  "of steps", RULES),
            Param("tolerance", TOLERANCE, float, "the adaptive rule's target: completeness gap at most this "
                  "fraction of |f(x) − f(x′)|", minimum=0.0, maximum=1.0)),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False, needs=frozenset({"baseline"}),
    family="path", settle=settle,
    gap_note="more steps or the adaptive rule reduce it",
)
