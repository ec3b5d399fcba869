"""Integrated Gradients' adaptive default against fixed rules and Captum, on the bundled photos.

Run from the repository root::

    .venv/bin/python benchmarks/bench_ig_adaptive.py              # the five photos, 3 rounds
    .venv/bin/python benchmarks/bench_ig_adaptive.py --photos coffee --reps 1

For each bundled photo (one image, its true label, black baseline, both
objectives: the score s_y and −L = log p_y), four contenders run
interleaved, round after round, and the median time of each is reported:

* core adaptive: ``attribute(..., "integrated_gradients")`` with its
  defaults (rule "adaptive", tolerance 5 %, at most 256 points);
* core trapezoid 32: the fixed rule that was the default before;
* core Gauss–Legendre 50: the same quadrature as Captum's default;
* Captum: ``IntegratedGradients`` (its default: 50 Gauss–Legendre steps),
  called once per objective as a user would, on the same model and input.

For each: the points used per image, the completeness gap it reached for
each objective (Σ attributions − (f(x) − f(x′)), relative to |f(x) − f(x′)|
with the core's floor: :func:`saliency_core.methods.integrated_gradients.gap_scale`),
and the seconds for both maps.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

# As dashboard.py sets it on a server: OpenMP threads sleep instead of spinning for cores others hold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import describe, interleaved_medians  # this folder is on sys.path when run as a script

from saliency_core import attribute
from saliency_core.core.baselines import normalisation_of
from saliency_core.inputs.samples import sample_images
from saliency_core.methods.declaration import AttributionWarning
from saliency_core.methods.integrated_gradients import completeness_gap
from saliency_core.models.loading import load_model

OBJECTIVES = ("score", "loss")
CORE = {"core adaptive": {}, "core trapezoid 32": {"rule": "trapezoid", "steps": 32},
        "core Gauss–Legendre 50": {"rule": "gauss_legendre", "steps": 50}}
CAPTUM_STEPS = 50


def black(model, x: torch.Tensor) -> torch.Tensor:
    mean, std = normalisation_of(model, None, None)
    return torch.stack([torch.full_like(x[:, c], (0.0 - float(mean[c])) / float(std[c])) for c in range(3)], dim=1)


def objective(logits: torch.Tensor, y: int, name: str) -> torch.Tensor:
    """(N,) s_y or log p_y = −L: what the core's Integrated Gradients explains for "score" and "loss"."""
    return logits[:, y] if name == "score" else F.log_softmax(logits, dim=1)[:, y]


def captum_run(model, x: torch.Tensor, y: int, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    from captum.attr import IntegratedGradients

    module = model.model
    out = {}
    for name in OBJECTIVES:
        ig = IntegratedGradients(lambda inp, n=name: objective(module(inp), y, n))
        out[name] = ig.attribute(x, baselines=reference, n_steps=CAPTUM_STEPS, method="gausslegendre")
    return out


def gaps(model, x: torch.Tensor, reference: torch.Tensor, y: int, attributions: dict[str, torch.Tensor]) -> dict:
    with torch.no_grad():
        fx, fr = model.model(x), model.model(reference)
    return {o: float(completeness_gap(a.sum(dim=(1, 2, 3)), objective(fx, y, o), objective(fr, y, o))[0])
            for o, a in attributions.items()}


def photo_rows(model, sample, device: torch.device, reps: int, warmup: int) -> list[str]:
    """The table's rows for one photo: every contender, interleaved over ``reps`` rounds."""
    x = model.preprocess([sample.image]).x
    y = sample.label
    reference = black(model, x)
    results: dict[str, tuple[int, dict]] = {}

    def core(params: dict, key: str) -> None:
        r = attribute(model, x, [y], "integrated_gradients", OBJECTIVES, baseline="black", **params)
        results[key] = (int(r.steps_used[0]), {o: float(r.convergence[o][0]) for o in OBJECTIVES})

    def theirs() -> None:
        results["Captum"] = (CAPTUM_STEPS, gaps(model, x, reference, y, captum_run(model, x, y, reference)))

    contenders = {k: (lambda p=p, k=k: core(p, k)) for k, p in CORE.items()} | {"Captum": theirs}
    t = interleaved_medians(contenders, device, reps, warmup)
    rows = []
    for key in contenders:
        points, gap = results[key]
        rows.append(f"| {sample.name} | {key} | {points} | {gap['score']:+.1%} | {gap['loss']:+.1%} | "
                    f"{t[key]:.2f} | {t[key] / t['Captum']:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default="", help="comma-separated sample names (default: all five)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", AttributionWarning)  # the gaps are in the table
    device = torch.device("cpu")
    model = load_model(None, device)
    photos = [s for s in sample_images() if not args.photos or s.name in args.photos.split(",")]
    print(f"{describe(device)}; load average {os.getloadavg()[0]:.1f} at the start")
    print("| photo | contender | points per image | gap score | gap loss (−L) | seconds (both maps) | "
          "time / Captum |")
    print("|---|---|---|---|---|---|---|")
    for sample in photos:
        for row in photo_rows(model, sample, device, args.reps, args.warmup):
            print(row, flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
