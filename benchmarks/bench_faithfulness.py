"""Speed of the faithfulness checks on the embedded model.

Run from the repository root::

    .venv/bin/python benchmarks/bench_faithfulness.py [--device cpu|cuda]

Reports deletion + insertion (20 steps, blur baseline) for one image, the
same for a batch of the sample photos (images/s), and cascading model
randomisation (8 stages, both maps) for one image; medians of a few runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_saliency import timed  # this folder is on sys.path when run as a script

from saliency_core.core.gradients import compute_saliency
from saliency_core.evaluation.faithfulness import deletion_insertion
from saliency_core.evaluation.sanity import cascading_randomization
from saliency_core.inputs.samples import sample_images
from saliency_core.models.loading import load_model


def median_time(fn: Callable[[], object], device: torch.device, runs: int = 3) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device) for _ in range(runs))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    model = load_model(None, args.device)
    dev = model.device
    chunk = 8 if dev.type == "cpu" else 64  # as the Faithfulness page does
    samples = sample_images()
    batch = model.preprocess([s.image for s in samples])
    labels = [s.label for s in samples]
    maps = compute_saliency(model, batch.x, labels).maps["score"]
    one = median_time(lambda: deletion_insertion(model, batch.x[:1], labels[:1], maps[:1], steps=20,
                                                 batch_size=chunk), dev)
    many = median_time(lambda: deletion_insertion(model, batch.x, labels, maps, steps=20, batch_size=chunk), dev)
    rand = median_time(lambda: cascading_randomization(model, batch.x[:1], labels[:1], max_stages=8), dev)
    print(f"device: {dev}")
    print(f"deletion + insertion, 20 steps, blur, one image: {one:.2f} s")
    print(f"deletion + insertion, 20 steps, blur, {len(labels)} images: {len(labels) / many:.2f} images/s")
    print(f"cascading randomisation, 8 stages, both maps, one image: {rand:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
