"""Integrated Gradients' default (the adaptive rule) against Captum's default on the bundled photos.

Run from the repository root::

    .venv/bin/python benchmarks/bench_ig_adaptive.py [--device cpu|cuda] [--reference] [--profile]

For each sample, on the embedded EfficientNet-Lite0 with the black baseline, in the same run:

* core adaptive: ``attribute(..., "integrated_gradients")`` with its defaults (adaptive rule, 5 % tolerance,
  at most 256 steps), both objectives in one call, as the dashboard asks;
* core trapezoid 32: the default before the adaptive rule;
* captum GL 50: ``captum.attr.IntegratedGradients`` with its defaults (50 Gauss-Legendre steps), once for the
  score and once for −L (log-softmax), ``internal_batch_size`` the rows per pass the engine takes.

Each row gives the points on the path per image, the completeness gap of the score and of −L (relative to
|f(x) − f(x′)|, floored as the engine floors it, so Captum's delta reads on the same scale) and the wall time
for both objectives. ``--reference`` adds each map's distance from a far finer integral, the trapezoid on
1,025 evenly spaced points (every pixel's integrand resolved everywhere on the path, not only where the
objective's own changes): ‖a − a_ref‖ / ‖a_ref‖ over all pixels and channels.
``--profile`` adds, from f and ∇f · (x − x′) at 513 evenly spaced points of each path, where the trapezoid's
error lies (the share of Σ |local error| in the first tenth of the path) and how many points a uniform grid
doubled from 3 needs to bring both gaps within 5 % (what refining the whole path, not its segments, costs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as dashboard.py sets it, before torch loads

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import describe  # this folder is on sys.path when run as a script

from saliency_core import attribute
from saliency_core.core import baselines
from saliency_core.core.gradients import forward_and_vjps, objective_per_image
from saliency_core.core.passes import row_bytes, rows_per_pass
from saliency_core.core.precision import synchronize
from saliency_core.inputs.samples import sample_images
from saliency_core.methods.integrated_gradients import gap_scale
from saliency_core.models.loading import load_model
from saliency_core.models.registry import LoadedModel

T = TypeVar("T")
CONTENDERS = ("core adaptive (default)", "core trapezoid 32 (old default)", "captum GL 50 (its default)")


def timed(device: torch.device, fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), wall seconds), the device synchronised before both clock reads."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - ref) / torch.linalg.vector_norm(ref))


def core(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, **params) -> tuple[dict, int]:
    """{objective: (attributions, signed gap)} and the steps used, both objectives in one call."""
    r = attribute(model, x, y, "integrated_gradients", ("score", "loss"), **params)
    return {o: (r.attributions[o], float(r.convergence[o][0])) for o in ("score", "loss")}, int(r.steps_used[0])


def captum(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, black: torch.Tensor, per_pass: int
           ) -> tuple[dict, int]:
    """Captum's IntegratedGradients at its defaults (50 Gauss-Legendre steps), once per objective; its delta
    over the engine's floored |f(x) − f(x′)|, so that both gaps read on one scale."""
    from captum.attr import IntegratedGradients

    module = model.module_for("exact")
    out = {}
    for obj, forward in (("score", module), ("loss", lambda t: torch.log_softmax(module(t), dim=1))):
        a, delta = IntegratedGradients(forward).attribute(x, baselines=black, target=y, n_steps=50,
                                                          method="gausslegendre", internal_batch_size=per_pass,
                                                          return_convergence_delta=True)
        with torch.no_grad():
            f_x, f_ref = (forward(t).gather(1, y[:, None])[:, 0] for t in (x, black))
        out[obj] = (a.detach(), float(delta[0] / gap_scale(f_x, f_ref)[0]))
    return out, 50


def profile(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, black: torch.Tensor, points: int = 513
            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """objective -> (f, g) at ``points`` evenly spaced α, float64: f the objective (s_y, −L), g = ∇f · (x − x′)."""
    module = model.module_for("exact")
    alphas = torch.linspace(0, 1, points, dtype=torch.float64)
    delta = x - black
    out: dict[str, tuple[list, list]] = {"score": ([], []), "loss": ([], [])}
    step = rows_per_pass(row_bytes((3, 224, 224), torch.float32), model.device)
    for start in range(0, points, step):
        a = alphas[start:start + step].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        rows = torch.lerp(black.expand(len(a), -1, -1, -1), x.expand(len(a), -1, -1, -1), a)
        targets = y.expand(len(a))
        v = forward_and_vjps(module, rows, targets, ("score", "loss"), loss_sign=-1)
        for o in ("score", "loss"):
            out[o][0].append(objective_per_image(v.logits.double(), targets, o, -1).cpu().numpy())
            out[o][1].append((v.grads[o].double() * delta.double()).flatten(1).sum(1).cpu().numpy())
    return {o: (np.concatenate(f), np.concatenate(g)) for o, (f, g) in out.items()}


def profile_line(name: str, scan: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Where the trapezoid's error lies, and the uniform grid (3, 5, 9, ... points) that reaches 5 %."""
    shares, gaps = [], {}
    for f, g in scan.values():
        n = len(f) - 1
        local = (f[1:] - f[:-1]) - (g[1:] + g[:-1]) / (2 * n)  # each interval's trapezoid error
        shares.append(np.abs(local[: n // 10]).sum() / np.abs(local).sum())
        scale = max(abs(f[-1] - f[0]), 0.01 * (abs(f[-1]) + abs(f[0])))
        for k in range(1, n.bit_length()):
            stride = n >> k
            w = np.full(2**k + 1, 1.0 / 2**k)
            w[[0, -1]] /= 2
            gaps.setdefault(2**k + 1, []).append(abs((w * g[::stride]).sum() - (f[-1] - f[0])) / scale)
    enough = next((p for p, gs in sorted(gaps.items()) if max(gs) <= 0.05), None)
    return (f"| {name} | {shares[0] * 100:.0f} % | {shares[1] * 100:.0f} % | "
            f"{enough if enough is not None else f'> {max(gaps)}'} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reference", action="store_true", help="also compare every map with a far finer integral")
    ap.add_argument("--profile", action="store_true", help="also scan each path at 513 points (see above)")
    args = ap.parse_args()
    model = load_model(None, args.device)
    dev = model.device
    mean, std = baselines.normalisation_of(model, None, None)
    per_pass = rows_per_pass(row_bytes((3, 224, 224), torch.float32), dev)
    print(f"# {describe(dev)}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{per_pass} rows per pass")
    header, rule = "| sample | contender | steps | gap score | gap −L | seconds (both) |", "|---|---|---|---|---|---|"
    if args.reference:
        header, rule = header + " error score | error −L |", rule + "---|---|"
    print(header, rule, sep="\n")
    totals: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for sample in sample_images():
        x = model.preprocess([sample.image]).x.to(dev)
        y = torch.tensor([sample.label], device=dev)
        black = baselines.make_baseline(x, "black", mean=mean, std=std)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fixed rule's gap warning, Captum's requires_grad notice
            results = dict(zip(CONTENDERS, (
                timed(dev, lambda: core(model, x, y)),  # noqa: B023 (called at once)
                timed(dev, lambda: core(model, x, y, rule="trapezoid", steps=32)),  # noqa: B023
                timed(dev, lambda: captum(model, x, y, black, per_pass)),  # noqa: B023
            ), strict=True))
            if args.reference:
                (reference, ref_steps), _ = timed(dev, lambda: core(model, x, y, rule="trapezoid", steps=1025))  # noqa: B023
        for name, ((res, steps), seconds) in results.items():
            line = (f"| {sample.name} | {name} | {steps} | {abs(res['score'][1]) * 100:.1f} % | "
                    f"{abs(res['loss'][1]) * 100:.1f} % | {seconds:.1f} |")
            if args.reference:
                line += "".join(f" {relative_error(res[o][0].cpu(), reference[o][0].cpu()) * 100:.1f} % |"
                                for o in ("score", "loss"))
            print(line, flush=True)
            totals[name].append(seconds)
        if args.reference:
            print(f"| {sample.name} | (reference: trapezoid) | {ref_steps} | "
                  f"{abs(reference['score'][1]) * 100:.2f} % | {abs(reference['loss'][1]) * 100:.2f} % | |", flush=True)
    if args.profile:
        print("\n| sample | error in the first tenth, score | −L | uniform grid for 5 % (points) |")
        print("|---|---|---|---|")
        for sample in sample_images():
            x = model.preprocess([sample.image]).x.to(dev)
            black = baselines.make_baseline(x, "black", mean=mean, std=std)
            scan = profile(model, x, torch.tensor([sample.label], device=dev), black)
            print(profile_line(sample.name, scan), flush=True)
    print()
    for name, seconds in totals.items():
        print(f"{name}: {sum(seconds):.1f} s for the {len(seconds)} samples")
    print(f"# load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
