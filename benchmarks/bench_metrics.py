"""Speed of the evaluation metrics (saliency_core.evaluation.metrics) against Quantus 0.6.0 doing the same work.

Run from the repository root::

    .venv/bin/python benchmarks/bench_metrics.py [--size 224] [--images 8] [--repeats 3] [--only road,...]

The embedded EfficientNet-Lite0 (``load_model()``), 8 images: the 5 bundled sample photos and mirror images
(flipped left-right) of the first 3 of them, resized to ``--size`` px; gradient maps of the score. Each
metric with this engine and with Quantus on the same images, maps and parameters (same number of perturbed
forward passes / recomputed maps), ``--repeats`` rounds, the two contenders interleaved (who goes first
alternates by round); the table gives the medians and the median of each round's Quantus / engine. ROAD
runs MoRF on grey copies of the images (Quantus's ROAD cannot rank per-pixel maps of 3-channel images);
Quantus's infidelity sweeps ``--size / 4`` px patches (16 per sweep), the engine draws as many random
squares of that size. The last row runs the five metrics that use the model at once with
:func:`saliency_core.evaluation.metrics.evaluate.evaluate` (one clean pass) against the sum of Quantus's
five. ``OMP_WAIT_POLICY`` defaults to PASSIVE (as ``dashboard.py`` sets it): on a shared machine spinning
OpenMP threads cost both contenders alike, and more than sleeping ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PYTEST", "1")  # Quantus: no progress bars

from saliency_core.evaluation.metrics import (
    complexity,
    faithfulness_correlation,
    infidelity,
    pointing_game,
    random_logit,
    relevance_mass,
    relevance_rank,
    road,
    sensitivity,
    sparseness,
)
from saliency_core.evaluation.metrics.evaluate import evaluate
from saliency_core.inputs.samples import sample_images
from saliency_core.methods.registry import attribute
from saliency_core.models.loading import load_model


class Grey(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated words: run the metrics whose name has one")
    args = parser.parse_args()
    import quantus

    model = load_model()
    net = model.module_for("exact")
    photos = [s.image for s in sample_images()]
    X = model.preprocess(photos).x
    X = torch.cat([X, X.flip(-1)])[: args.images]  # the 5 photos, then their mirror images
    X = torch.nn.functional.interpolate(X, size=(args.size, args.size), mode="bilinear", antialias=True)
    n, _, h, w = X.shape
    y = net(X).argmax(dim=1).detach()
    maps = attribute(model, X, y, "gradient", ("score",)).maps["score"].double()
    grey = X.mean(dim=1, keepdim=True)
    Xg = grey.expand(-1, 3, -1, -1).contiguous()
    maps_g = attribute(model, Xg, y, "gradient", ("score",)).maps["score"].double()
    mask = np.zeros((n, h, w), bool)
    mask[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    x, yy, a = X.numpy(), y.numpy(), maps.numpy()[:, None]
    q = {"normalise": False, "abs": False, "disable_warnings": True, "return_aggregate": False}
    call = {"model": net, "x_batch": x, "y_batch": yy, "a_batch": a, "device": "cpu", "batch_size": n}

    def explain(model, inputs, targets, **_):
        r = attribute(net, torch.as_tensor(inputs), torch.as_tensor(targets), "gradient", ("score",))
        return r.maps["score"].double().numpy()[:, None]

    pct = [10, 30, 50, 70, 90]
    patch = args.size // 4
    runs, samples = 20, 5
    subset = args.size  # 224 at 224 px, the default
    cases = {
        f"ROAD MoRF ({len(pct)} percentages)": (
            lambda: road.road(net, Xg, y, maps_g, percentages=pct, orders=("morf",)),
            lambda: quantus.ROAD(percentages=pct, **q)(**{**call, "model": Grey(net).eval(), "x_batch": grey.numpy(),
                                                          "a_batch": maps_g.numpy()[:, None]})),
        f"faithfulness correlation ({runs} runs)": (
            lambda: faithfulness_correlation.faithfulness_correlation(net, X, y, maps, runs=runs,
                                                                        subset_size=subset),
            lambda: quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=3 * subset, perturb_baseline=0.0, **q)(
                **call, softmax=False)),
        "infidelity (16 squares)": (
            lambda: infidelity.infidelity(net, X, y, maps, perturbation="square", patch=patch, samples=16,
                                          scaling="none"),
            lambda: quantus.Infidelity(perturb_patch_sizes=[patch], n_perturb_samples=1, perturb_baseline=0.0, **q)(
                **call, softmax=False)),
        f"max-sensitivity ({samples} samples)": (
            lambda: sensitivity.sensitivity(net, X, y, maps, "gradient", samples=samples),
            lambda: quantus.MaxSensitivity(nr_samples=samples, **q)(**call, explain_func=explain)),
        "random logit": (
            lambda: random_logit.random_logit(net, X, y, maps, "gradient", classes=1000),
            lambda: quantus.RandomLogit(num_classes=1000, **q)(**call, explain_func=explain)),
        "sparseness": (lambda: sparseness.sparseness(maps),
                       lambda: quantus.Sparseness(**q)(**{**call, "a_batch": a.copy()})),
        "complexity": (lambda: complexity.complexity(maps),
                       lambda: quantus.Complexity(**q)(**{**call, "a_batch": a.copy()})),
        "pointing game": (lambda: pointing_game.pointing_game(maps, mask),
                          lambda: quantus.PointingGame(**q)(**call, s_batch=mask[:, None].astype(float))),
        "relevance mass accuracy": (
            lambda: relevance_mass.relevance_mass_accuracy(maps, mask),
            lambda: quantus.RelevanceMassAccuracy(**q)(**call, s_batch=mask[:, None].astype(float))),
        "relevance rank accuracy": (
            lambda: relevance_rank.relevance_rank_accuracy(maps, mask),
            lambda: quantus.RelevanceRankAccuracy(**q)(**call, s_batch=mask[:, None].astype(float))),
    }
    model_metrics = [k for k in cases if not k.startswith(("sparseness", "complexity", "pointing", "relevance"))]
    shared = {"road_morf": {"steps": 5, "noise": 0.01}, "faithfulness_correlation": {"runs": runs,
              "subset_size": subset, "baseline": "dataset_mean"}, "max_sensitivity": {"samples": samples},
              "infidelity": {"perturbation": "square", "patch": patch, "samples": 16, "scaling": "none"},
              "random_logit": {}}
    cases["the five above at once: evaluate() / sum of Quantus's"] = (
        lambda: evaluate(net, X, y, maps, shared, recompute="gradient"), None)
    words = [w for w in args.only.split(",") if w]
    cases = {k: v for k, v in cases.items() if not words or any(w in k for w in words)}
    if os.environ.get("BENCH_PROFILE"):  # one engine call of each, under cProfile
        import cProfile
        import pstats

        for name, (ours, _) in cases.items():
            prof = cProfile.Profile()
            prof.runcall(ours)
            print(name)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(12)
        return
    print(f"EfficientNet-Lite0, {n} images at {args.size} px, CPU, torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()}", flush=True)
    times: dict[str, dict[str, list[float]]] = {k: {"engine": [], "quantus": []} for k in cases}
    for r in range(args.repeats):
        for name, (ours, theirs) in cases.items():
            if theirs is None:  # evaluate(): against this round's Quantus times of the five
                times[name]["engine"].append(timed(ours)[0])
                times[name]["quantus"].append(sum(times[k]["quantus"][-1] for k in model_metrics if k in times))
                continue
            pair = [("engine", ours), ("quantus", theirs)]
            for who, fn in pair if r % 2 == 0 else pair[::-1]:
                times[name][who].append(timed(fn)[0])
        print(f"round {r + 1} done, load average {os.getloadavg()}", flush=True)
    print("| metric | engine (s) | Quantus 0.6.0 (s) | Quantus / engine (median of rounds) | range |")
    print("|---|---:|---:|---:|---|")
    for name, t in times.items():
        ratios = [q / e for q, e in zip(t["quantus"], t["engine"], strict=True)]
        print(f"| {name} | {statistics.median(t['engine']):.3f} | {statistics.median(t['quantus']):.3f} | "
              f"{statistics.median(ratios):.1f}x | {min(ratios):.1f}-{max(ratios):.1f}x |", flush=True)


if __name__ == "__main__":
    main()
