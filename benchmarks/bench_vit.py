"""Every method the dashboard offers a ViT-B/16, timed on one 224 px image of this machine, both objectives.

Run from the repository root::

    .venv/bin/python benchmarks/bench_vit.py                    # every offered method at its defaults
    .venv/bin/python benchmarks/bench_vit.py --methods gradient,grad_cam --reps 3

torchvision's ``vit_b_16`` (86 M parameters, 197 tokens of 768) with random weights: the ImageNet weights
are not on this machine, and a method's cost is the model's passes, which the weights don't change, except
for the adaptive Integrated Gradients rule, whose steps depend on how curved the model is along the path
(it reports the steps it took). Each method runs through ``saliency_core.attribute`` as the pages call it,
on the ``chelsea`` photo, for the score and the loss at once, at the dashboard's defaults; the CAM methods
on the layer they find by themselves (the last block's first norm). ``--warmup`` runs first (default 1;
0 counts the first run's one-off costs, such as a private copy of the model, in its time), then the median of
``--reps`` runs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

# As dashboard.py sets it on a server: OpenMP threads sleep instead of spinning for cores others hold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import describe  # this folder is on sys.path when run as a script

from saliency_core import attribute
from saliency_core.core.model_access import freeze
from saliency_core.inputs.samples import sample_by_name
from saliency_core.methods import model_needs
from saliency_core.methods.registry import ATTRIBUTION_METHODS
from saliency_core.models.registry import REGISTRY, LoadedModel, imagenet_categories


def vit_b_16() -> LoadedModel:
    from torchvision.models import vit_b_16 as build

    torch.manual_seed(0)
    module = build(weights=None)
    torch.nn.init.normal_(module.heads.head.weight, std=0.02)  # torchvision starts the head at 0: no gradient
    freeze(module)
    return LoadedModel("vit_b_16", REGISTRY["vit_b_16"], module, imagenet_categories(), torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="", help="comma-separated names (default: every offered method)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    model = vit_b_16()
    x = model.preprocess(sample_by_name("chelsea").image).x
    offered = [m for m, method in ATTRIBUTION_METHODS.items() if not model_needs.unmet_needs(method, model)]
    refused = {m: model_needs.why_not(method, model) for m, method in ATTRIBUTION_METHODS.items()
               if m not in offered}
    chosen = [m for m in args.methods.split(",") if m] or offered
    print(f"ViT-B/16 (random weights), one 224 px image, score and loss; {describe(torch.device('cpu'))}\n")
    print("| method | seconds | what it ran |")
    print("|---|---:|---|")
    for name in chosen:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(args.warmup):
                attribute(model, x, [-1], name, ("score", "loss"))  # the private copies, the allocator
            times = []
            for _ in range(args.reps):
                start = time.perf_counter()
                r = attribute(model, x, [-1], name, ("score", "loss"))
                times.append(time.perf_counter() - start)
        ran = ", ".join(f"{k}={v}" for k, v in r.params.items() if k != "baseline")
        if r.steps_used is not None:
            ran += f"; {int(r.steps_used[0])} steps taken"
        print(f"| {ATTRIBUTION_METHODS[name].title} | {statistics.median(times):.1f} | {ran} |")
    for name, why in refused.items():
        print(f"| {ATTRIBUTION_METHODS[name].title} | not offered | {why} |")


if __name__ == "__main__":
    main()
