"""How close the compute budget's estimates come to the time the work really takes.

Run from the repository root::

    .venv/bin/python benchmarks/bench_estimate.py [--device cpu|cuda] [--rounds 2]

Measures the embedded model's price per row (:func:`saliency_core.serving.compute_cost.measure_pass_cost`, as the
dashboard does once an hour), then runs a few of the dashboard's computations on the coffee sample (and
the five samples for the Gallery's batch) and prints, for each, its rows, the estimate and the wall time,
round after round (the price measured again before each round). The load average before and after is
printed too: on a shared machine both the price and the work slow down with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as dashboard.py sets it, before torch loads

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import timed  # this folder is on sys.path when run as a script

from saliency_core import attribute
from saliency_core.evaluation import faithfulness, sanity
from saliency_core.evaluation.analysis import analyse
from saliency_core.evaluation.method_comparison import compare_methods
from saliency_core.evaluation.method_ranking import ranking_table
from saliency_core.inputs.samples import sample_by_name, sample_images
from saliency_core.methods.registry import shown_by_default
from saliency_core.models.loading import load_model
from saliency_core.serving import compute_cost


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model = load_model(None, args.device)
    dev = model.device
    chunk = 8 if dev.type == "cpu" else 64  # as the pages do
    coffee = sample_by_name("coffee")
    x = model.preprocess([coffee.image]).x
    crops = np.stack([model.crop_array(s.image) for s in sample_images()])
    labels = [s.label for s in sample_images()]
    maps = attribute(model, x, [coffee.label], "gradient").maps
    fast = compare_methods(model, x, coffee.label, shown_by_default())

    cases: dict[str, tuple[compute_cost.Work, Callable[[], object]]] = {
        "SmoothGrad, 64 samples, one image (Saliency)": (
            compute_cost.method_work("smoothgrad", {"samples": 64}),
            lambda: attribute(model, x, [coffee.label], "smoothgrad", max_batch=32, samples=64)),
        "Integrated Gradients, 16 steps, 5 images (Gallery)": (
            compute_cost.method_work("integrated_gradients", {"steps": 16}, images=5),
            lambda: analyse(model, crops, [None] * 5, labels, method="integrated_gradients", params={"steps": 16})),
        "deletion/insertion, 3 orders x 20 steps (Faithfulness)": (
            compute_cost.deletion_insertion_work(3, 20),
            lambda: faithfulness.deletion_insertion_orders(model, x, [coffee.label], maps, 20, batch_size=chunk)),
        "randomisation, SmoothGrad 8 samples, 8 stages (Faithfulness)": (
            compute_cost.randomisation_work("smoothgrad", {"samples": 8}, 8),
            lambda: sanity.cascading_randomization(model, x, [coffee.label], max_stages=8, attribution="smoothgrad",
                                                   params={"samples": 8})),
        "ranking of the four fast methods (Methods)": (
            compute_cost.ranking_work({m: {} for m in shown_by_default()}, len(fast.entries()), 20),
            lambda: ranking_table(model, x, fast, steps=20, batch_size=chunk)),
    }
    print(f"device: {dev}; load average before: {os.getloadavg()}")
    estimates: dict[str, list[float]] = {k: [] for k in cases}
    actual: dict[str, list[float]] = {k: [] for k in cases}
    prices = []
    for _ in range(args.rounds):
        price = compute_cost.measure_pass_cost(model)
        prices.append(price)
        for name, (work, run) in cases.items():
            estimates[name].append(price.seconds(work))
            actual[name].append(timed(run, dev))
    print(f"load average after: {os.getloadavg()}")
    print("price per row, each round: " + "; ".join(f"gradient {p.gradient_s * 1000:.0f} ms, forward "
                                                 f"{p.forward_s * 1000:.0f} ms" for p in prices))
    print("| computation | gradient rows | forward rows | estimate (median) | actual (median) | actual / estimate |")
    print("|---|---|---|---|---|---|")
    for name, (work, _) in cases.items():
        est, act = statistics.median(estimates[name]), statistics.median(actual[name])
        print(f"| {name} | {work.gradient_rows} | {work.forward_rows} | {est:.1f} s | {act:.1f} s | {act / est:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
